"""A pids cgroup per render, where this process may create one: `pids.max` bounds the render's
own process tree, whatever else runs as the same uid.

`RLIMIT_NPROC` (set too, `confine.set_rlimits`) counts every process of the uid (the operator's
threads and the other renders included) and binds nobody running as root; a cgroup counts the
render's tree only. A cgroup is created only where the render server's own pids cgroup is
writable (cgroup v1 `pids`, or v2 with `pids` in the parent's `subtree_control`): an operator
pod with a read-only `/sys/fs/cgroup` keeps the rlimit alone. The child joins before it confines
itself; the render server removes the directory once the render and its tree are gone.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
PREFIX = "projectgen-render-"


def own_dir() -> Path | None:
    """This process's pids cgroup directory (v1 `pids` hierarchy, or the v2 unified one)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            rel = path.lstrip("/")
            if "pids" in controllers.split(","):
                return ROOT / "pids" / rel
            if controllers == "" and (ROOT / "cgroup.controllers").exists():
                return ROOT / rel
    return None


def path_for(pid: int, parent: Path | None) -> Path | None:
    return None if parent is None else parent / f"{PREFIX}{pid}"


def enter(parent: Path | None, limit: int) -> bool:
    """Put this process in a new pids cgroup under `parent` with `pids.max` = limit; False
    (nothing changed) where that is not possible."""
    path = path_for(os.getpid(), parent)
    if path is None:
        return False
    try:
        path.mkdir(exist_ok=True)  # one a dead server left behind for a pid reused since
    except OSError:
        return False
    try:
        (path / "pids.max").write_text(str(limit))
        (path / "cgroup.procs").write_text(str(os.getpid()))
    except OSError:
        with contextlib.suppress(OSError):
            path.rmdir()
        return False
    return True


def remove(pid: int, parent: Path | None) -> bool:
    """Remove the render's cgroup; False while a process of it is still to be reaped."""
    path = path_for(pid, parent)
    if path is None:
        return True
    try:
        path.rmdir()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True
