"""Building a cached dev tool (control plane, node binaries, Gitea, promtool, the kstatus helper) once.

Test processes started together may all find the cache empty: the first takes a file lock and
builds, the others wait for the lock and then find the build done.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO_HACK = Path(__file__).resolve().parents[2] / "hack"
"""The source checkout's build scripts (absent when not installed from one)."""


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


def cache_dir(*parts: str) -> Path:
    """``${XDG_CACHE_HOME:-~/.cache}/projectgen/bin/<parts>``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).joinpath("projectgen", "bin", *parts)


def build_script(name: str) -> Path | None:
    script = REPO_HACK / name
    return script if script.is_file() else None


def stamped(directory: Path, binary: str, stamp: str) -> bool:
    """`directory/binary` is executable and `directory/VERSION` reads `stamp` (what the build
    script writes last, once the binary is in place)."""
    try:
        found = (directory / "VERSION").read_text()
    except OSError:
        return False
    path = directory / binary
    return path.is_file() and os.access(path, os.X_OK) and found == stamp


def find_or_build(
    *,
    override_env: str,
    target: Path,
    binary: str,
    stamp: str,
    script: str,
    version: str,
    what: str,
    error: Callable[[str], Exception],
    log: Callable[[str], None],
    on_path: bool = False,
) -> Path:
    """A Go-built dev tool: `$override_env` (a path), then `binary` on PATH when `on_path`, then
    `target` when `stamped`, else built there by ``hack/<script> target version`` under a lock."""
    override = os.environ.get(override_env)
    if override:
        path = Path(override).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise error(f"{override_env}={override} is not an executable file")
        return path
    if on_path and (found := shutil.which(binary)):
        return Path(found)
    if stamped(target, binary, stamp):
        return target / binary
    built = build_script(script)
    if built is None:
        raise error(f"{binary} not found (set {override_env}); {target} is empty")
    if shutil.which("go") is None:
        raise error(f"{binary} not found and `go` is not on PATH to build it into {target}")
    build_once(
        target.parent / f".{target.name}.lock",
        lambda: stamped(target, binary, stamp),
        ["bash", str(built), str(target), version],
        what=what,
        error=error,
        log=log,
    )
    return target / binary
