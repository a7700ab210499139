"""A render server: one clean interpreter that has imported copier, forking a process per render.

Importing copier takes 0.3-1.5 s (more on a loaded machine); a render should cost its own work
plus a fork. The server is started once per operator (lazily) as
`python -I -B -m projectgen.generation.sandbox.forkserver`, with the same scrubbed environment
as a render, and never loads a template itself: each render is a fresh `fork()` of it that runs
`child.main()` (confinement first) and exits. The server is single-threaded, so forking it is
safe, which forking the operator (threads, sockets, a token in memory) would not be.

Protocol on the control socket (AF_UNIX, SOCK_SEQPACKET: one message per request or answer): the
parent sends `{"id": N}` with three file descriptors (SCM_RIGHTS: the render's stdin, stdout, stderr); the
server answers `{"id": N, "pid": P}` once forked, then `{"id": N, "status": S, "cpu": C}` (a
waitpid status: `-signal` or the exit code; the CPU seconds the kernel counted for it) once it has
reaped the render. Each render runs in its own
session, so the parent kills it with `killpg`.

A render may start processes (`programs.py`); none may leave the render's process group (seccomp
refuses `setsid` and `setpgid`). The server is a child subreaper (`PR_SET_CHILD_SUBREAPER`):
whatever a render leaves behind (a double-forked daemon) becomes the server's child, not the
pod's init's. When a render ends, the server kills its process group *before* reaping it (the
zombie keeps the group's id from being reused), then reaps it: nothing a render started outlives
it, and an orphan the kill ended is reaped as it comes.
"""

from __future__ import annotations

import array
import contextlib
import ctypes
import json
import os
import select
import signal
import socket
import sys

from projectgen.generation.sandbox import child, pidsgroup

MAX_FDS = 3
PR_SET_CHILD_SUBREAPER = 36


def _status(raw: int) -> int:
    return -os.WTERMSIG(raw) if os.WIFSIGNALED(raw) else os.WEXITSTATUS(raw)


def _render(fds: list[int]) -> None:
    """In the forked process: become the render (fds 0-2), then never return."""
    code = 1
    try:
        os.setsid()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        os.closerange(3, 1 << 16)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        code = child.main()
        sys.stdout.flush()
    finally:
        os._exit(code)


def _reap(control: socket.socket, running: dict[int, int], ended: set[int]) -> None:
    """Reap every child that has exited: a render (its process group killed first, while its
    zombie still holds the group's id) or an orphan a render left. `ended`: renders whose pids
    cgroup is still to be removed (it empties as their orphans are reaped)."""
    cgroups = pidsgroup.own_dir()
    while True:
        try:
            found = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            found = None
        if found is None:
            for pid in list(ended):
                if pidsgroup.remove(pid, cgroups):
                    ended.discard(pid)
            return
        pid = found.si_pid
        rid = running.pop(pid, None)
        if rid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        _, raw, usage = os.wait4(pid, 0)
        if rid is not None:
            ended.add(pid)
            cpu = usage.ru_utime + usage.ru_stime
            control.send(json.dumps({"id": rid, "status": _status(raw), "cpu": cpu}).encode())


def serve(control: socket.socket) -> None:
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    running: dict[int, int] = {}  # pid -> request id
    ended: set[int] = set()
    while True:
        ready, _, _ = select.select([control.fileno(), wake_r], [], [])
        if wake_r in ready:
            os.read(wake_r, 4096)
        _reap(control, running, ended)
        if control.fileno() not in ready:
            continue
        fds = array.array("i")
        data, ancdata, _, _ = control.recvmsg(4096, socket.CMSG_LEN(MAX_FDS * fds.itemsize))
        if not data:  # the operator is gone: so are its renders, and the server
            for pid in running:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
            return
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
        request = json.loads(data)
        pid = os.fork()
        if pid == 0:
            control.close()
            _render(list(fds))
        for fd in fds:
            os.close(fd)
        running[pid] = request["id"]
        control.send(json.dumps({"id": request["id"], "pid": pid}).encode())


def main() -> int:
    control = socket.socket(fileno=int(sys.argv[1]))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        serve(control)
    return 0


if __name__ == "__main__":
    sys.exit(main())
