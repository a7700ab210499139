"""A cap on what one fetch may write: bytes and files under its directory.

git has no client-side limit on what a clone downloads, so a watcher measures the fetch's
directory a few times a second and, past a cap, kills the git processes of this fetch (the
operator's descendants carrying this fetch's marker in their environment); the caller then gets
`CapExceeded` instead of git's error. The volume is never filled by one template. The pause
between walks grows with their cost (a walk of 10,000 files takes about 85 ms here), so the
overshoot past the cap is what git writes in that pause.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from projectgen.diskusage import tree_usage

MARKER = "PROJECTGEN_FETCH"
INTERVAL = 0.2


class CapExceeded(Exception):
    pass


@dataclass
class Watch:
    root: Path
    max_bytes: int
    max_files: int
    token: str = field(default_factory=lambda: secrets.token_hex(8))
    exceeded: str | None = None

    @property
    def env(self) -> dict[str, str]:
        """Put this in the environment of the processes that fetch."""
        return {MARKER: self.token}

    def measure(self) -> str | None:
        files, total = tree_usage(self.root, self.max_files, self.max_bytes)
        if total > self.max_bytes:
            return f"more than {self.max_bytes} bytes (PROJECTGEN_TEMPLATE_MAX_BYTES)"
        if files > self.max_files:
            return f"more than {self.max_files} files (PROJECTGEN_TEMPLATE_MAX_FILES)"
        return None

    def kill(self) -> int:
        """SIGKILL this process' descendants that carry the marker; returns how many."""
        parents: dict[int, int] = {}
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat", "rb") as fh:
                    stat = fh.read()
                parents[int(name)] = int(stat.rsplit(b")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
        me = os.getpid()
        marker = f"{MARKER}={self.token}".encode()
        killed = 0
        for pid in parents:
            ancestor, hops = parents.get(pid), 0
            while ancestor not in (None, 0, 1, me) and hops < 64:
                ancestor, hops = parents.get(ancestor), hops + 1
            if ancestor != me:
                continue
            try:
                with open(f"/proc/{pid}/environ", "rb") as fh:
                    if marker not in fh.read().split(b"\0"):
                        continue
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except OSError:
                continue
        return killed


@contextlib.contextmanager
def watch_size(root: Path, max_bytes: int, max_files: int, what: str) -> Iterator[Watch]:
    """Watch `root` while the body runs; raise CapExceeded (over the body's own error) when the
    fetch grew past a cap."""
    watch = Watch(root, max_bytes, max_files)
    done = threading.Event()

    def run() -> None:
        pause = INTERVAL
        while not done.wait(pause):
            started = time.monotonic()
            problem = watch.measure()
            # A walk of a big checkout costs: keep the watcher under about a sixth of one core.
            pause = max(INTERVAL, 5 * (time.monotonic() - started))
            if problem is not None:
                watch.exceeded = problem
                while not done.is_set():
                    watch.kill()
                    done.wait(INTERVAL / 4)
                return

    thread = threading.Thread(target=run, name="projectgen-fetchcap", daemon=True)
    thread.start()
    try:
        try:
            yield watch
        finally:
            done.set()
            thread.join()
        if watch.exceeded is None:
            watch.exceeded = watch.measure()
    except BaseException:
        if watch.exceeded is not None:
            raise CapExceeded(f"{what} holds {watch.exceeded}; stopped") from None
        raise
    if watch.exceeded is not None:
        raise CapExceeded(f"{what} holds {watch.exceeded}; stopped")
