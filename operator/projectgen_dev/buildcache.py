"""Building a cached dev tool (control plane, node binaries, Gitea, the kstatus helper) once.

Test processes started together may all find the cache empty: the first takes a file lock and
builds, the others wait for the lock and then find the build done.
"""

from __future__ import annotations

import fcntl
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path


def build_once(
    lock: Path,
    built: Callable[[], bool],
    build: Sequence[str] | Callable[[], None],
    *,
    what: str,
    error: Callable[[str], Exception],
    log: Callable[[str], None],
) -> None:
    """Unless `built()`, build under an exclusive lock on the file `lock`; `built()` is asked again
    once the lock is ours, since whoever held it may have built it.

    `build` is a build script's argv (its progress goes to stderr, never our stdout) or a function.
    A script that fails, or a build that leaves `built()` false, raises `error(message)`."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as held:
        try:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"another process is building {what}; waiting for it")
            fcntl.flock(held, fcntl.LOCK_EX)
        try:
            if built():
                return
            log(f"building {what}")
            started = time.monotonic()
            if callable(build):
                build()
            else:
                proc = subprocess.run(list(build), stdout=sys.stderr, check=False)
                if proc.returncode != 0:
                    raise error(f"{build[1]} failed with exit code {proc.returncode} (see its output above)")
            if not built():
                raise error(f"building {what} finished, but left the cache incomplete")
            log(f"built in {time.monotonic() - started:.0f}s")
        finally:
            fcntl.flock(held, fcntl.LOCK_UN)
