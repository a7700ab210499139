"""The parent side of a render: start the child, watch it, kill it, read its result.

The child runs in its own session (process group) with a scrubbed environment (no token, no
`KUBERNETES_*`, no proxy settings: nothing of the operator's), so one `killpg` ends it and
anything it might have left. The parent enforces what the kernel cannot: the wall-clock timeout,
the output caps (files and total bytes, checked every `poll` seconds and once more at the end;
the file size rlimit bounds what one file can add between two checks), and cancellation.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from projectgen.generation.errors import GenerationError
from projectgen.generation.sandbox.limits import MIB, Limits

log = logging.getLogger(__name__)

CHILD = "projectgen.generation.sandbox.child"
READ_CAP = 256 * 1024
ENV = {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "TZ": "UTC"}
"""The whole environment of a render process."""


class RenderCancelled(GenerationError):
    """The render was stopped because its resource went away or changed: not a failure of it."""

    permanent = False


class _Reader(threading.Thread):
    """Drains a pipe, keeping its first `READ_CAP` bytes (a child cannot fill the parent's memory)."""

    def __init__(self, pipe: IO[bytes]) -> None:
        super().__init__(daemon=True)
        self.pipe = pipe
        self.data = bytearray()

    def run(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            while chunk := self.pipe.read(65536):
                if len(self.data) < READ_CAP:
                    self.data += chunk[: READ_CAP - len(self.data)]


def output_usage(root: Path, max_files: int, max_bytes: int) -> tuple[int, int]:
    """Entries and bytes under `root`, stopping early once past either cap."""
    files = size = 0
    stack = [str(root)]
    while stack:
        directory = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            files += 1
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                else:
                    size += entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue
            if files > max_files or size > max_bytes:
                return files, size
    return files, size


def run(
    request: dict[str, Any],
    box: Path,
    limits: Limits,
    where: str,
    *,
    should_stop: Callable[[], bool] | None = None,
    poll: float = 0.2,
) -> dict[str, Any]:
    """Render `request` in a confined child writing only under `box`; return its result.

    Raises GenerationError with a message naming the limit a template went over."""
    request = {**request, "limits": limits.to_json(), "box": str(box)}
    proc = subprocess.Popen(
        [sys.executable, "-I", "-B", "-m", CHILD],
        # The running interpreter itself (argv[0] still names the venv, so its packages load):
        # its path may pass through a directory the operator's user cannot traverse.
        executable="/proc/self/exe",
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
        cwd=box,
        start_new_session=True,
        close_fds=True,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    out, err = _Reader(proc.stdout), _Reader(proc.stderr)
    out.start()
    err.start()
    killed: str | None = None
    started = time.monotonic()
    try:
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write(json.dumps(request).encode())
            proc.stdin.close()
        deadline = time.monotonic() + limits.wall_seconds
        while killed is None:
            try:
                proc.wait(timeout=poll)
                break
            except subprocess.TimeoutExpired:
                pass
            if time.monotonic() > deadline:
                killed = f"did not finish within the wall-clock limit of {limits.wall_seconds:g} s"
            elif should_stop is not None and should_stop():
                killed = "cancelled"
            else:
                killed = _over_output(box, limits)
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        # The group may hold nothing else (the child cannot fork), but make sure.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        out.join(5)
        err.join(5)
    if err.data:
        # The template's own output, for whoever debugs the operator; never in status.
        log.debug("render process stderr: %s", bytes(err.data[-4096:]).decode("utf-8", "replace"))
    if killed == "cancelled":
        raise RenderCancelled(f"{where}: render stopped: the resource was deleted or changed")
    if killed is not None:
        raise GenerationError(f"{where}: the template {killed}; it was stopped")
    result = _last_json(bytes(out.data))
    if result is None:
        elapsed = time.monotonic() - started
        raise GenerationError(f"{where}: the template {_died(proc.returncode, limits, elapsed)}")
    over = _over_output(box, limits)
    if over is not None:
        raise GenerationError(f"{where}: the template {over}")
    return result


def _over_output(box: Path, limits: Limits) -> str | None:
    files, size = output_usage(box, limits.output_files, limits.output_bytes)
    if files > limits.output_files:
        return f"wrote more than the limit of {limits.output_files} files"
    if size > limits.output_bytes:
        return f"wrote more than the output limit of {limits.output_bytes // MIB} MiB"
    return None


def _died(returncode: int, limits: Limits, elapsed: float) -> str:
    # SIGXCPU at the soft CPU limit, SIGKILL at the hard one (a second later); a SIGKILL before
    # the CPU limit could be reached is the OOM killer's (the pod's memory limit).
    if returncode == -signal.SIGXCPU or (returncode == -signal.SIGKILL and elapsed >= limits.cpu_seconds):
        return f"used more than its CPU limit of {limits.cpu_seconds} s; it was stopped"
    if returncode == -signal.SIGKILL:
        return "render process was killed by the kernel (out of memory: the pod's memory limit)"
    if returncode < 0:
        return f"render process was ended by signal {signal.Signals(-returncode).name}"
    return f"render process exited with code {returncode} without a result"


def _last_json(data: bytes) -> dict[str, Any] | None:
    for line in reversed(data.decode("utf-8", "replace").splitlines()):
        with contextlib.suppress(ValueError):
            value = json.loads(line)
            if isinstance(value, dict):
                return value
    return None
