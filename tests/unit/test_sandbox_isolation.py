"""What a render cannot reach: other processes (by pid, signal or SIGIO ownership), SysV IPC and
message queues, files outside its checkout without Landlock; and what the parent does not take
from it: its answer is a claim, never an infrastructure error, and a SIGKILL is not called out of
memory without evidence."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import resource
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyseccomp as sc
import pytest
from test_generation_template import server, work
from test_sandbox_confinement import HOSTILE, extension, make, render, render_cli_without_landlock

from projectgen.generation.errors import GenerationError
from projectgen.generation.sandbox import Limits, oom, runner
from projectgen_dev.gitserver import GitHTTPServer

__all__ = ["server", "work"]  # module fixtures shared with test_generation_template

LIBC = ctypes.CDLL(None, use_errno=True)
ARCH = sc.system_arch()
IOPRIO_WHO_PROCESS = 1

PID_DIRECTED = (
    # (attempt name, syscall) -- every call of the table that names a process by pid or pidfd
    ("prlimit64", "prlimit64"),
    ("setpriority", "setpriority"),
    ("setpriority_pgrp", "setpriority"),
    ("setpriority_user", "setpriority"),
    ("ioprio_set", "ioprio_set"),
    ("ioprio_set_pgrp", "ioprio_set"),
    ("ioprio_set_user", "ioprio_set"),
    ("sched_setaffinity", "sched_setaffinity"),
    ("sched_setscheduler", "sched_setscheduler"),
    ("sched_setparam", "sched_setparam"),
    ("sched_setattr", "sched_setattr"),
    ("migrate_pages", "migrate_pages"),
    ("move_pages", "move_pages"),
    ("get_robust_list", "get_robust_list"),
    ("kill", "kill"),
    ("tkill", "tkill"),
    ("tgkill", "tgkill"),
    ("rt_sigqueueinfo", "rt_sigqueueinfo"),
    ("rt_tgsigqueueinfo", "rt_tgsigqueueinfo"),
    ("pidfd_open", "pidfd_open"),
    ("pidfd_send_signal", "pidfd_send_signal"),
    ("pidfd_getfd", "pidfd_getfd"),
    ("process_madvise", "process_madvise"),
    ("process_mrelease", "process_mrelease"),
    ("kcmp", "kcmp"),
    ("ptrace", "ptrace"),
    ("process_vm_readv", "process_vm_readv"),
    ("perf_event_open", "perf_event_open"),
    ("fcntl_F_SETOWN", "fcntl"),
    ("fcntl_F_SETOWN_EX", "fcntl"),
    ("fcntl_F_SETSIG", "fcntl"),
    ("ioctl_FIOSETOWN", "ioctl"),
    ("ioctl_SIOCSPGRP", "ioctl"),
    ("ioctl_TIOCSPGRP", "ioctl"),
)

ATTACK = """
import ctypes, errno, fcntl, resource, signal, struct
libc = ctypes.CDLL(None, use_errno=True)
NR = {numbers!r}
NOBODY = 2**31 - 3  # a uid with no process: the user forms of setpriority/ioprio_set change nothing

def call(name, *args):
    conv = [a if isinstance(a, ctypes.c_void_p) else ctypes.c_long(a) for a in args]
    result = libc.syscall(ctypes.c_long(NR[name]), *conv)
    if result == -1:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result

def attack(pid, harm):
    '''Each pid-directed call against pid: with harm, a real change; else the target's own
    values (a no-op that still succeeds if allowed).'''
    found = {{}}
    def attempt(name, fn):
        try:
            fn()
            found[name] = 'allowed'
        except OSError as exc:
            found[name] = 'denied: ' + errno.errorcode.get(exc.errno, str(exc.errno))
    nice = 19 if harm else os.getpriority(os.PRIO_PROCESS, pid)
    cpus = {{min(os.sched_getaffinity(pid))}} if harm else os.sched_getaffinity(pid)
    policy = os.SCHED_IDLE if harm else os.sched_getscheduler(pid)
    ioprio = (3 << 13) if harm else call('ioprio_get', 1, pid)
    limits = (7, 7) if harm else {parent_nofile!r}
    sig = signal.SIGKILL if harm else 0
    node = ctypes.c_ulong(1)
    info = ctypes.create_string_buffer(128)
    head, size = ctypes.c_void_p(), ctypes.c_size_t()
    attempt('prlimit64', lambda: resource.prlimit(pid, resource.RLIMIT_NOFILE, limits))
    attempt('setpriority', lambda: os.setpriority(os.PRIO_PROCESS, pid, nice))
    attempt('setpriority_pgrp', lambda: os.setpriority(os.PRIO_PGRP, pid, nice))
    attempt('setpriority_user', lambda: os.setpriority(os.PRIO_USER, NOBODY, nice))
    attempt('ioprio_set', lambda: call('ioprio_set', 1, pid, ioprio))
    attempt('ioprio_set_pgrp', lambda: call('ioprio_set', 2, pid, ioprio))
    attempt('ioprio_set_user', lambda: call('ioprio_set', 3, NOBODY, ioprio))
    attempt('sched_setaffinity', lambda: os.sched_setaffinity(pid, cpus))
    attempt('sched_setscheduler', lambda: os.sched_setscheduler(pid, policy, os.sched_param(0)))
    attempt('sched_setparam', lambda: os.sched_setparam(pid, os.sched_param(0)))
    attr = ctypes.create_string_buffer(struct.pack('IIQiIQQQ', 48, policy, 0, nice, 0, 0, 0, 0), 48)
    attempt('sched_setattr', lambda: call('sched_setattr', pid, ctypes.c_void_p(ctypes.addressof(attr)), 0))
    addr = ctypes.c_void_p(ctypes.addressof(node))
    attempt('migrate_pages', lambda: call('migrate_pages', pid, 64, addr, addr))
    attempt('move_pages', lambda: call('move_pages', pid, 0, ctypes.c_void_p(0), ctypes.c_void_p(0), ctypes.c_void_p(0), 0))
    attempt('get_robust_list', lambda: call('get_robust_list', pid, ctypes.c_void_p(ctypes.addressof(head)), ctypes.c_void_p(ctypes.addressof(size))))
    attempt('kill', lambda: os.kill(pid, sig))
    attempt('tkill', lambda: call('tkill', pid, sig))
    attempt('tgkill', lambda: call('tgkill', pid, pid, sig))
    attempt('rt_sigqueueinfo', lambda: call('rt_sigqueueinfo', pid, sig, ctypes.c_void_p(ctypes.addressof(info))))
    attempt('rt_tgsigqueueinfo', lambda: call('rt_tgsigqueueinfo', pid, pid, sig, ctypes.c_void_p(ctypes.addressof(info))))
    attempt('pidfd_open', lambda: call('pidfd_open', pid, 0))
    attempt('pidfd_send_signal', lambda: call('pidfd_send_signal', 0, sig, ctypes.c_void_p(0), 0))
    attempt('pidfd_getfd', lambda: call('pidfd_getfd', 0, 0, 0))
    attempt('process_madvise', lambda: call('process_madvise', 0, ctypes.c_void_p(0), 0, 8, 0))
    attempt('process_mrelease', lambda: call('process_mrelease', 0, 0))
    attempt('kcmp', lambda: call('kcmp', pid, os.getpid(), 0, 0, 0))
    attempt('ptrace', lambda: call('ptrace', 0x4206, pid, 0, 0))  # PTRACE_SEIZE
    attempt('process_vm_readv', lambda: call('process_vm_readv', pid, ctypes.c_void_p(0), 0, ctypes.c_void_p(0), 0, 0))
    attempt('perf_event_open', lambda: call('perf_event_open', ctypes.c_void_p(ctypes.addressof(info)), pid, -1, -1, 0))
    r, w = os.pipe()
    owner = struct.pack('ii', 1, pid)  # F_OWNER_PID
    attempt('fcntl_F_SETOWN', lambda: fcntl.fcntl(r, fcntl.F_SETOWN, pid))
    attempt('fcntl_F_SETOWN_EX', lambda: fcntl.fcntl(r, 15, owner))
    attempt('fcntl_F_SETSIG', lambda: fcntl.fcntl(r, 10, sig))
    attempt('ioctl_FIOSETOWN', lambda: fcntl.ioctl(r, 0x8901, struct.pack('i', pid)))
    attempt('ioctl_SIOCSPGRP', lambda: fcntl.ioctl(r, 0x8902, struct.pack('i', pid)))
    attempt('ioctl_TIOCSPGRP', lambda: fcntl.ioctl(r, 0x5410, struct.pack('i', pid)))
    if harm:  # the reported attack: SIGIO as SIGKILL to the owner, on a write
        try:
            fcntl.fcntl(r, fcntl.F_SETFL, fcntl.fcntl(r, fcntl.F_GETFL) | os.O_ASYNC)
            os.write(w, b'x')
        except OSError:
            pass
    # the render's own pid and pid 0 stay allowed
    attempt('own_prlimit', lambda: resource.prlimit(os.getpid(), resource.RLIMIT_CORE, (0, 0)))
    attempt('own_setpriority', lambda: os.setpriority(os.PRIO_PROCESS, 0, os.getpriority(os.PRIO_PROCESS, 0)))
    attempt('own_affinity', lambda: os.sched_setaffinity(os.getpid(), os.sched_getaffinity(0)))
    return found

out['victim'] = attack({victim}, True)
out['parent'] = attack(os.getppid(), False)
"""


def _ioprio(pid: int) -> int:
    return int(LIBC.syscall(sc.resolve_syscall(ARCH, "ioprio_get"), IOPRIO_WHO_PROCESS, pid))


def process_state(pid: int) -> dict[str, Any]:
    """What the pid-directed calls would change, read from outside the sandbox."""
    return {
        "nofile": resource.prlimit(pid, resource.RLIMIT_NOFILE),
        "nice": os.getpriority(os.PRIO_PROCESS, pid),
        "affinity": sorted(os.sched_getaffinity(pid)),
        "scheduler": os.sched_getscheduler(pid),
        "ioprio": _ioprio(pid),
        "alive": Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] not in "ZX",
    }


def test_a_render_reaches_no_other_process(tmp_path: Path, server: GitHTTPServer, work: Path) -> None:
    """Every pid-directed call, against the render server (its parent) and an unrelated process of
    the same uid: refused with EPERM, and neither changes. The render's own pid and 0 still work."""
    victim = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        runner.start_server()
        parent = runner.server_pid()
        assert parent is not None
        numbers = {name: sc.resolve_syscall(ARCH, name) for _, name in [*PID_DIRECTED, ("", "ioprio_get")]}
        code = ATTACK.format(
            numbers=numbers, victim=victim.pid, parent_nofile=resource.prlimit(parent, resource.RLIMIT_NOFILE)
        )
        before = {"victim": process_state(victim.pid), "parent": process_state(parent)}
        url = make(server, work, "pid-directed", extension(code))
        _, tree = render(tmp_path, url, limits=HOSTILE)
        probe = json.loads((tree / "probe.json").read_text())
        for target in ("victim", "parent"):
            tried = probe[target]
            own = {k: tried.pop(k) for k in ("own_prlimit", "own_setpriority", "own_affinity")}
            assert own == dict.fromkeys(own, "allowed"), target
            assert tried == {name: "denied: EPERM" for name, _ in PID_DIRECTED}, target
        assert victim.poll() is None
        assert runner.server_pid() == parent
        assert {"victim": process_state(victim.pid), "parent": process_state(parent)} == before
    finally:
        victim.kill()
        victim.wait()


def test_landlock_scopes_signals_and_abstract_sockets(tmp_path: Path) -> None:
    """Landlock alone (ABI 6), without seccomp: no signal and no abstract unix socket leaves the domain."""
    name = f"\0projectgen-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(name)
        listener.listen()
        code = f"""
import os, socket, sys
from projectgen.generation.sandbox import confine
found = confine.landlock(confine.runtime_paths([]), [{str(tmp_path)!r}])
assert found.landlock_abi >= 6 and found.scoped, found
out = {{}}
try:
    os.kill({os.getpid()}, 0); out['kill'] = 'allowed'
except OSError as exc:
    out['kill'] = exc.errno
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect({name!r}); out['connect'] = 'allowed'
except OSError as exc:
    out['connect'] = exc.errno
os.kill(os.getpid(), 0)  # its own domain: allowed
print(out)
"""
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str({"kill": errno.EPERM, "connect": errno.EPERM})


def _ipc_ids() -> dict[str, set[str]]:
    """What `ipcs` lists: the SysV objects of the IPC namespace, by id."""
    found = {}
    for kind in ("shm", "sem", "msg"):
        lines = Path(f"/proc/sysvipc/{kind}").read_text().splitlines()[1:]
        found[kind] = {line.split()[1] for line in lines}
    return found


def test_a_render_cannot_create_sysv_ipc_or_message_queues(
    tmp_path: Path, server: GitHTTPServer, work: Path
) -> None:
    queue = f"/projectgen-test-{os.getpid()}"
    code = f"""
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
def attempt(name, result):
    out[name] = 'created' if result >= 0 else 'denied: ' + os.strerror(ctypes.get_errno())
attempt('shmget', libc.shmget(0, 64 * 1024 * 1024, 0o1600))
attempt('semget', libc.semget(0, 1, 0o1600))
attempt('msgget', libc.msgget(0, 0o1600))
attempt('mq_open', libc.mq_open({queue.encode()!r}, os.O_CREAT | os.O_RDWR, 0o600, None))
"""
    before = _ipc_ids()
    try:
        url = make(server, work, "sysv-ipc", extension(code))
        _, tree = render(tmp_path, url, limits=HOSTILE)
        probe = json.loads((tree / "probe.json").read_text())
        assert probe == dict.fromkeys(
            ("shmget", "semget", "msgget", "mq_open"), "denied: Operation not permitted"
        )
        assert _ipc_ids() == before
    finally:  # on a sandbox that let them through, leave nothing behind
        after = _ipc_ids()
        for kind, ctl in (("shm", LIBC.shmctl), ("sem", LIBC.semctl), ("msg", LIBC.msgctl)):
            for ident in after[kind] - before[kind]:
                ctl(int(ident), 0, None)  # IPC_RMID
        LIBC.mq_unlink(queue.encode())


def test_a_sigkill_is_not_called_out_of_memory_without_evidence(
    tmp_path: Path, server: GitHTTPServer, work: Path
) -> None:
    url = make(server, work, "self-kill", extension("import signal\nos.kill(os.getpid(), signal.SIGKILL)"))
    with pytest.raises(GenerationError) as err:
        render(tmp_path, url, limits=HOSTILE)
    assert err.value.permanent
    assert "killed by a signal (SIGKILL) that did not come from its limits" in err.value.message
    assert "memory" not in err.value.message


FORGE = """
line = (json.dumps({answer}) + '\\n').encode()
for fd in range(3, 64):
    try:
        os.write(fd, line)
    except OSError:
        pass
os._exit(0)
"""


@pytest.mark.parametrize(
    ("name", "answer", "message"),
    [
        ("enospc", {"error": "x", "errno": errno.ENOSPC}, "the template failed: x"),
        ("edquot", {"error": "x", "errno": errno.EDQUOT}, "the template failed: x"),
        ("tasks", {"ok": True, "tasks": 5}, "the template's render process gave a malformed answer"),
        ("error", {"error": ["not", "text"]}, "the template's render process gave a malformed answer"),
    ],
)
def test_a_forged_answer_is_a_render_failure(
    tmp_path: Path, server: GitHTTPServer, work: Path, name: str, answer: dict[str, Any], message: str
) -> None:
    """Template code writes its own answer to the result descriptor: the disk is not full, so
    it is the render's own permanent failure, never an OSError kopf would retry for ever."""
    url = make(server, work, f"forge-{name}", extension(FORGE.format(answer=answer)))
    with pytest.raises(GenerationError) as err:
        render(tmp_path, url, limits=HOSTILE)
    assert err.value.permanent
    assert err.value.message == f"sources[0].template: {message}"


# -- files, with and without Landlock ---------------------------------------------------------------


@pytest.mark.parametrize("errno_name", ["EPERM", "ENOSYS"])
@pytest.mark.parametrize("path", ["/etc/hostname", "../../../../../../../../etc/hostname"])
def test_without_landlock_external_data_outside_the_checkout_is_refused(
    tmp_path: Path, server: GitHTTPServer, work: Path, errno_name: str, path: str
) -> None:
    """`projectgen render` under a filter answering Landlock's syscalls with EPERM / ENOSYS: a
    plain template (no extensions) naming a host file in `_external_data` fails, naming it."""
    files = {"copier.yml": f"_external_data:\n  leak: {path}\n", "a.txt.jinja": "{{ _external_data.leak }}\n"}
    url = make(server, work, f"leak-{errno_name}-{len(path)}", files)
    done = render_cli_without_landlock(tmp_path, url, "leak", errno_name)
    assert done.returncode == 1, done.stderr
    assert f"_external_data.leak: {path!r} is outside the template and the project" in done.stderr
    assert Path("/etc/hostname").read_text().strip() not in done.stderr + done.stdout
    assert not (tmp_path / "leak").exists()
    with pytest.raises(GenerationError) as err:  # with Landlock: the same rule, the same words
        render(tmp_path, url)
    assert f"_external_data.leak: {path!r} is outside the template and the project" in err.value.message


EXTERNAL_INSIDE = {
    # The render's layout: the project is written to <tmp>/box/out, the checkout is <tmp>/template.
    "copier.yml": "_external_data:\n  info: ../../template/data.yml\n",
    "data.yml": "owner: platform\n",
    "a.txt.jinja": "{{ _external_data.info.owner }}\n",
}


def test_external_data_inside_the_checkout_renders(tmp_path: Path, server: GitHTTPServer, work: Path) -> None:
    url = make(server, work, "external-inside", EXTERNAL_INSIDE)
    _, tree = render(tmp_path, url)  # with Landlock
    assert (tree / "a.txt").read_text() == "platform\n"
    done = render_cli_without_landlock(tmp_path, url, "inside", "EPERM")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "inside" / "a.txt").read_text() == "platform\n"


def test_without_landlock_python_opens_nothing_outside_the_rules(tmp_path: Path) -> None:
    """The catch-all behind the named refusals: in the render process, without Landlock, Python
    opens and lists only what the Landlock ruleset would allow."""
    checkout, box = tmp_path / "checkout", tmp_path / "box"
    checkout.mkdir()
    box.mkdir()
    (checkout / "in.txt").write_text("in")
    (checkout / "link").symlink_to("/etc/hostname")
    code = f"""
import json, os, sys
from projectgen.generation.sandbox import confine
confine.path_guard([{str(checkout)!r}, *confine.runtime_paths([])], [{str(box)!r}])
out = {{}}
def attempt(name, fn):
    try:
        fn(); out[name] = 'allowed'
    except PermissionError:
        out[name] = 'refused'
attempt('read_checkout', lambda: open({str(checkout / "in.txt")!r}).read())
attempt('write_box', lambda: open({str(box / "out.txt")!r}, 'w').write('x'))
attempt('import', lambda: __import__('decimal'))
attempt('read_host', lambda: open('/etc/hostname').read())
attempt('read_through_link', lambda: open({str(checkout / "link")!r}).read())
attempt('list_host', lambda: os.listdir('/etc'))
attempt('scandir_host', lambda: list(os.scandir('/proc')))
attempt('write_checkout', lambda: open({str(checkout / "new.txt")!r}, 'w'))
attempt('os_open_host', lambda: os.open('/etc/hostname', os.O_RDONLY))
print(json.dumps(out))
"""
    done = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "read_checkout": "allowed",
        "write_box": "allowed",
        "import": "allowed",
        "read_host": "refused",
        "read_through_link": "refused",
        "list_host": "refused",
        "scandir_host": "refused",
        "write_checkout": "refused",
        "os_open_host": "refused",
    }


def test_out_of_memory_is_said_only_on_the_counters_evidence() -> None:
    """The diagnosis from what the parent knows: the signal, the kernel's CPU count, the OOM counters."""
    limits = Limits(cpu_seconds=10)
    quiet = oom.OomCounters(cgroup=3, node=7)
    assert oom.OomCounters(cgroup=4, node=7).killed_since(quiet) == "cgroup"
    assert oom.OomCounters(cgroup=3, node=8).killed_since(quiet) is None  # the pod's own counter says no
    assert oom.OomCounters(cgroup=None, node=8).killed_since(oom.OomCounters(None, 7)) == "node"
    assert oom.OomCounters(cgroup=None, node=None).killed_since(oom.OomCounters(None, None)) is None
    kill = -signal.SIGKILL
    assert "OOM killer (out of memory" in runner._died(kill, limits, 0.5, "cgroup")
    assert "probably by the kernel's OOM killer" in runner._died(kill, limits, 0.5, "node")
    assert "CPU limit of 10 s" in runner._died(kill, limits, 10.2, None)
    assert "CPU limit of 10 s" in runner._died(-signal.SIGXCPU, limits, None, None)
    assert runner._died(kill, limits, 0.5, None).endswith(
        "killed by a signal (SIGKILL) that did not come from its limits"
    )
    assert oom.counters().node is not None  # this kernel counts OOM kills (/proc/vmstat)


def test_a_render_cannot_watch_the_data_volume(tmp_path: Path, server: GitHTTPServer, work: Path) -> None:
    """Landlock checks no inotify watch: one on the data directory would name other tenants' files."""
    data = tmp_path / "data" / "projects"
    data.mkdir(parents=True)
    code = f"""
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init1(0)
out['inotify_init1'] = 'allowed' if fd >= 0 else os.strerror(ctypes.get_errno())
if fd >= 0:
    ok = libc.inotify_add_watch(fd, {str(data).encode()!r}, 0x100) >= 0  # IN_CREATE
    out['watch_data'] = 'allowed' if ok else os.strerror(ctypes.get_errno())
out['fanotify_init'] = 'allowed' if libc.fanotify_init(0, 0) >= 0 else os.strerror(ctypes.get_errno())
"""
    url = make(server, work, "inotify", extension(code))
    _, tree = render(tmp_path, url, limits=HOSTILE)
    probe = json.loads((tree / "probe.json").read_text())
    assert probe == {"inotify_init1": "Operation not permitted", "fanotify_init": "Operation not permitted"}
