"""The parent side of a render: start the child, watch it, kill it, read its result.

Renders are forked by the render server (`forkserver.py`, started on first use and again if it
died), so a render costs a fork, not an interpreter start and copier's imports.

Nothing the child says is taken on trust: template code runs in the child and can write its own
line to the result descriptor (or keep the real one from being written). The parent checks the
answer's shape (`_answer`: anything else is a malformed answer, a render failure), decides for
itself what a death was (CPU counted by the kernel, OOM counters, see `oom.py`), and the caller
checks the disk itself before calling anything infrastructure (`template._child_error`).

The child runs in its own session (process group) with a scrubbed environment (no token, no
`KUBERNETES_*`, no proxy settings: nothing of the operator's), so one `killpg` ends it and
anything it might have left. The parent enforces what the kernel cannot: the wall-clock timeout,
the output caps (files and total bytes, checked every `poll` seconds and once more at the end;
the file size rlimit bounds what one file can add between two checks), and cancellation.
"""

from __future__ import annotations

import array
import contextlib
import itertools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from projectgen.api.v1alpha1.common import MAX_PATH
from projectgen.diskusage import tree_usage
from projectgen.generation.errors import GenerationError
from projectgen.generation.sandbox import oom
from projectgen.generation.sandbox.limits import MIB, Limits

log = logging.getLogger(__name__)

SERVER = "projectgen.generation.sandbox.forkserver"
READ_CAP = 256 * 1024
ENV = {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "TZ": "UTC"}
"""The whole environment of a render process."""


class RenderCancelled(GenerationError):
    """The render was stopped because its resource went away or changed: not a failure of it."""

    permanent = False


class SandboxKilled(GenerationError):
    """The render was stopped by one of its limits (wall clock, CPU, memory, output) or killed by
    a signal: the template is too big or too slow for the limits, or misbehaves. Its own class so
    the operator can count these apart from templates that fail by themselves (the metric
    `projectgen_render_failures_total{reason="sandbox_killed"}`)."""


class _Reader(threading.Thread):
    """Drains a pipe, keeping its first `READ_CAP` bytes (a child cannot fill the parent's memory)."""

    def __init__(self, pipe: IO[bytes]) -> None:
        super().__init__(daemon=True)
        self.pipe = pipe
        self.data = bytearray()

    def run(self) -> None:
        with contextlib.suppress(OSError, ValueError), self.pipe:
            while chunk := self.pipe.read(65536):
                if len(self.data) < READ_CAP:
                    self.data += chunk[: READ_CAP - len(self.data)]


class _Render:
    """One render process, as the server reported it."""

    def __init__(self) -> None:
        self.pid = 0
        self.returncode: int | None = None
        self.cpu: float | None = None
        """CPU seconds the kernel counted for the render (from the server's wait4)."""
        self.started = threading.Event()
        self.done = threading.Event()

    def kill(self) -> None:
        if self.pid and not self.done.is_set():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)


class _Server:
    """The parent's end of the render server."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[int, tuple[socket.socket, _Render]] = {}
        self._pid = 0

    def pid(self) -> int | None:
        with self._lock:
            return self._pid if self._sock is not None else None

    def _start(self) -> socket.socket:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        proc = subprocess.Popen(
            [sys.executable, "-I", "-B", "-m", SERVER, str(theirs.fileno())],
            # The running interpreter itself (argv[0] still names the venv, so its packages load):
            # its path may pass through a directory the operator's user cannot traverse.
            executable="/proc/self/exe",
            env=ENV,
            cwd="/",
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            pass_fds=(theirs.fileno(),),
            start_new_session=True,
        )
        theirs.close()
        self._pid = proc.pid
        threading.Thread(target=self._read, args=(ours, proc), daemon=True, name="render-server").start()
        return ours

    def _read(self, sock: socket.socket, proc: subprocess.Popen[bytes]) -> None:
        while True:
            try:
                data = sock.recv(4096)
            except OSError:
                data = b""
            if not data:
                break
            message = json.loads(data)
            with self._lock:
                sock_render = self._waiting.get(message["id"])
                if sock_render is not None and "status" in message:
                    del self._waiting[message["id"]]
            if sock_render is None:
                continue
            render = sock_render[1]
            if "pid" in message:
                render.pid = int(message["pid"])
                render.started.set()
            else:
                render.returncode = int(message["status"])
                render.cpu = float(message["cpu"]) if "cpu" in message else None
                render.done.set()
        with self._lock:  # the server died: its renders are lost, the next render starts a new one
            if self._sock is sock:
                self._sock = None
            lost = [rid for rid, (s, _) in self._waiting.items() if s is sock]
            for rid in lost:
                render = self._waiting.pop(rid)[1]
                render.kill()
                render.returncode = -signal.SIGKILL if render.returncode is None else render.returncode
                render.started.set()
                render.done.set()
        sock.close()
        proc.wait()

    def ensure(self) -> None:
        with self._lock:
            if self._sock is None:
                self._sock = self._start()

    def spawn(self, fds: tuple[int, int, int]) -> _Render:
        render = _Render()
        with self._lock:
            if self._sock is None:
                self._sock = self._start()
            rid = next(self._ids)
            self._waiting[rid] = (self._sock, render)
            self._sock.sendmsg(
                [json.dumps({"id": rid}).encode()],
                [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))],
            )
        if not render.started.wait(60):
            raise OSError("the render server did not start a render within 60 s")
        return render


SERVER_PROCESS = _Server()


def start_server() -> None:
    """Start the render server now rather than at the first render (which would pay its imports)."""
    SERVER_PROCESS.ensure()


def server_pid() -> int | None:
    """The render server's process id, if it runs (renders are its children)."""
    return SERVER_PROCESS.pid()


def run(
    request: dict[str, Any],
    box: Path,
    limits: Limits,
    where: str,
    *,
    should_stop: Callable[[], bool] | None = None,
    poll: float = 0.2,
) -> dict[str, Any]:
    """Render `request` in a confined process writing only under `box`; return its result.

    Raises GenerationError with a message naming the limit a template went over."""
    request = {**request, "limits": limits.to_json(), "box": str(box)}
    oom_before = oom.counters()
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        render = SERVER_PROCESS.spawn((in_r, out_w, err_w))
    finally:
        for fd in (in_r, out_w, err_w):
            os.close(fd)
    out, err = _Reader(os.fdopen(out_r, "rb")), _Reader(os.fdopen(err_r, "rb"))
    out.start()
    err.start()
    killed: str | None = None
    started = time.monotonic()
    try:
        with contextlib.suppress(BrokenPipeError), os.fdopen(in_w, "wb") as stdin:
            stdin.write(json.dumps(request).encode())
        deadline = started + limits.wall_seconds
        while killed is None and not render.done.wait(poll):
            if time.monotonic() > deadline:
                killed = f"did not finish within the wall-clock limit of {limits.wall_seconds:g} s"
            elif should_stop is not None and should_stop():
                killed = "cancelled"
            else:
                killed = _over_output(box, limits)
    finally:
        render.kill()
        render.done.wait(30)
        out.join(5)
        err.join(5)
    if err.data:
        # The template's own output, for whoever debugs the operator; never in status.
        log.debug("render process stderr: %s", bytes(err.data[-4096:]).decode("utf-8", "replace"))
    if killed == "cancelled":
        raise RenderCancelled(f"{where}: render stopped: the resource was deleted or changed")
    if killed is not None:
        raise SandboxKilled(f"{where}: the template {killed}; it was stopped")
    result = _last_json(bytes(out.data))
    if result is None:
        returncode = render.returncode if render.returncode is not None else -signal.SIGKILL
        oom_kill = oom.counters().killed_since(oom_before)
        raise SandboxKilled(f"{where}: the template {_died(returncode, limits, render.cpu, oom_kill)}")
    over = _over_output(box, limits)
    if over is not None:
        raise SandboxKilled(f"{where}: the template {over}")
    answer = _answer(result)
    if answer is None:
        raise GenerationError(f"{where}: the template's render process gave a malformed answer")
    return answer


def _over_output(box: Path, limits: Limits) -> str | None:
    files, size = tree_usage(box, limits.output_files, limits.output_bytes)
    if files > limits.output_files:
        return f"wrote more than the limit of {limits.output_files} files"
    if size > limits.output_bytes:
        return f"wrote more than the output limit of {limits.output_bytes // MIB} MiB"
    return None


def _died(returncode: int, limits: Limits, cpu: float | None, oom_kill: str | None) -> str:
    """What ended a render that gave no answer, from what the parent knows: the signal, the CPU
    time the kernel counted and the OOM counters. SIGXCPU comes at the soft CPU limit, SIGKILL at
    the hard one (a second later)."""
    cpu_limit = f"used more than its CPU limit of {limits.cpu_seconds} s; it was stopped"
    if returncode == -signal.SIGXCPU:
        return cpu_limit
    if returncode == -signal.SIGKILL:
        if cpu is not None and cpu >= limits.cpu_seconds:
            return cpu_limit
        if oom_kill == "cgroup":
            return (
                "render process was killed by the kernel's OOM killer (out of memory: the pod's memory limit)"
            )
        if oom_kill == "node":
            return "render process was killed, probably by the kernel's OOM killer (out of memory)"
        return "render process was killed by a signal (SIGKILL) that did not come from its limits"
    if returncode < 0:
        return f"render process was ended by signal {signal.Signals(-returncode).name}"
    return f"render process exited with code {returncode} without a result"


MAX_MESSAGE = 2000
"""Characters of a render's own error message kept for status (and Events)."""
MAX_SKIP_PATTERNS = 200
"""`_skip_if_exists` patterns of one template kept for the export's merge."""


def _answer(result: dict[str, Any]) -> dict[str, Any] | None:
    """The child's answer with the fields and types the parent uses, or None when it is
    malformed. An error message is whitespace-collapsed and cut to `MAX_MESSAGE` characters."""
    if "error" in result:
        error, code = result["error"], result.get("errno")
        if not isinstance(error, str) or not (code is None or type(code) is int):
            return None
        answer: dict[str, Any] = {"error": " ".join(error.split())[:MAX_MESSAGE] or "(no message)"}
        if code is not None:
            answer["errno"] = code
        if result.get("limit") in (True, "processes"):
            answer["limit"] = result["limit"]
        return answer
    tasks, skip = result.get("tasks", []), result.get("skipIfExists", [])
    hooks = result.get("hooksSkipped", [])
    if result.get("ok") is not True or not all(isinstance(x, list) for x in (tasks, skip, hooks)):
        return None
    if not all(isinstance(t, str) for t in (*tasks, *skip, *hooks)):
        return None
    return {
        "ok": True,
        "tasks": [t[:MAX_MESSAGE] for t in tasks[:100]],
        "hooksSkipped": [h[:255] for h in hooks[:10]],
        # A pattern longer than a path is no path's; a template with more is cut, not failed.
        "skipIfExists": [p for p in skip[:MAX_SKIP_PATTERNS] if 0 < len(p) <= MAX_PATH],
    }


def _last_json(data: bytes) -> dict[str, Any] | None:
    for line in reversed(data.decode("utf-8", "replace").splitlines()):
        with contextlib.suppress(ValueError):
            value = json.loads(line)
            if isinstance(value, dict):
                return value
    return None
