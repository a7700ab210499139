"""Evidence that the kernel's OOM killer ended a render: its counters, read before and after.

A SIGKILL alone says nothing about memory: the pod's OOM killer sends one, so does anything else
allowed to signal the render (the render itself among them). A render killed by SIGKILL is called
out of memory only when a counter of OOM kills moved while it ran:
- the memory cgroup of this process (the pod's container, where the render also is): cgroup v2
  `memory.events` `oom_kill`, cgroup v1 `memory.oom_control` `oom_kill`;
- else the node's `/proc/vmstat` `oom_kill` (not namespaced: it may count another pod's kill, so
  the message then says "probably").
A counter that cannot be read is no evidence.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True, slots=True)
class OomCounters:
    cgroup: int | None
    node: int | None

    def killed_since(self, before: OomCounters) -> str | None:
        """'cgroup' or 'node' when that counter grew since `before`, else None."""
        if self.cgroup is not None and before.cgroup is not None:
            return "cgroup" if self.cgroup > before.cgroup else None
        if self.node is not None and before.node is not None and self.node > before.node:
            return "node"
        return None


def _field(path: Path, name: str) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == name:
                return int(value)
    return None


def _cgroup_files() -> list[Path]:
    candidates: list[Path] = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            rel = path.lstrip("/")
            if controllers == "":
                candidates += [CGROUP_ROOT / rel / "memory.events", CGROUP_ROOT / "memory.events"]
            elif "memory" in controllers.split(","):
                base = CGROUP_ROOT / "memory"
                candidates += [base / rel / "memory.oom_control", base / "memory.oom_control"]
    return candidates


def counters() -> OomCounters:
    cgroup = None
    for path in _cgroup_files():
        cgroup = _field(path, "oom_kill")
        if cgroup is not None:
            break
    return OomCounters(cgroup, _field(Path("/proc/vmstat"), "oom_kill"))
