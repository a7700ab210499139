"""What a render process does to itself before it loads a template: rlimits, Landlock, seccomp.

Runs in the child only (`sandbox/child.py`), which is a fresh interpreter with a scrubbed
environment. Everything here is unprivileged: `PR_SET_NO_NEW_PRIVS` (set by both bindings) is
what lets an ordinary process load a Landlock ruleset and a seccomp filter, so the operator pod
keeps `runAsNonRoot`, no capabilities, no privilege escalation and its RuntimeDefault profile.

- **Landlock** (binding: `landlock`, whose ruleset knows filesystem rights only; the ruleset is
  created here with the kernel's whole `landlock_ruleset_attr` and filled through the binding's
  lower layer): read the template checkout and the Python runtime and its packages (plus system
  libraries), write only the render's own directory. Every right the kernel's ABI knows is
  handled, so whatever is not listed is denied, the data volume, other renders, `/proc` and
  `/var/run/secrets` included. From ABI 4 TCP bind/connect are handled (and never allowed); from
  ABI 6 the domain is scoped: no signal (`kill`, `F_SETOWN` SIGIO included) and no abstract
  unix socket reaches a process outside it. A Landlock domain also stops `ptrace` of anything
  outside it.
- **seccomp** (binding: `pyseccomp`, over Debian's libseccomp2; plus `pidfilter.py`, a filter
  for what libseccomp cannot express): no sockets at all (rendering needs none); processes only
  with Landlock (`fork`, `vfork`, `clone` and `execve` then allowed, minus namespace flags and
  CLONE_PARENT; without Landlock only threads: `clone` with `CLONE_THREAD`, no `execve`);
  `clone3` answers ENOSYS so the C library falls back to `clone`; no `setsid`/`setpgid` (every
  process stays in the render's process group); signals only inside the render's tree (Landlock
  ABI 6 scope, else only to the render and its process group); no call that names another
  process (limits, priorities, affinity, scheduling, I/O priority, page migration; see
  `pidfilter.py`: pid 0 or the render's pid), no
  pidfds, no SIGIO ownership (`fcntl` F_SETOWN/F_SETOWN_EX/F_SETSIG, `ioctl`
  FIOSETOWN/SIOCSPGRP/TIOCSPGRP/TIOCSTI, whatever the pid), no SysV IPC or POSIX message queues
  (both outlive the render in the pod's IPC namespace), no inotify or fanotify (Landlock does not
  check a watch, which would name the files other renders write), no io_uring (its operations bypass
  seccomp), no namespaces, mounts, BPF, keyrings or ptrace.
- **programs** (`programs.py`): Landlock EXECUTE only on the allowlist (the interpreter and its
  loader, sh, bash, git, a few file tools); the render's own directory is writable but not
  executable.
- **rlimits**: CPU seconds (SIGXCPU, then SIGKILL a second later), address space, file size
  (Python ignores SIGXFSZ, so a write fails with EFBIG), open files, tasks, no core dumps.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import resource
import sys
import termios
from collections.abc import Iterable
from dataclasses import dataclass

import landlock as ll
from landlock import plumbing

try:  # pyseccomp looks for libseccomp.so.2 (ldconfig) as it is imported: before confinement
    import pyseccomp as sc
except (ImportError, OSError, RuntimeError) as exc:  # libseccomp2 missing from the image
    sc = None
    SECCOMP_MISSING = str(exc)

from projectgen.generation.sandbox import pidfilter, programs
from projectgen.generation.sandbox.limits import Limits

CLONE_THREAD = 0x00010000

PROCESS_SYSCALLS = ("fork", "vfork", "execve", "execveat")
"""Refused without Landlock (no exec allowlist can be enforced there); allowed with it."""

CLONE_NEWTIME = 0x00000080
CLONE_PARENT = 0x00008000
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_REFUSED = (
    CLONE_PARENT,
    CLONE_NEWNS,
    CLONE_NEWCGROUP,
    CLONE_NEWUTS,
    CLONE_NEWIPC,
    CLONE_NEWUSER,
    CLONE_NEWPID,
    CLONE_NEWNET,
)
"""`clone` flags refused when processes are allowed: a new namespace, or a child given to the
render's parent (outside the render's tree). CLONE_NEWTIME is no `clone` flag (that bit is the
exit signal); `clone3`, which takes it, answers ENOSYS."""

DENIED_SYSCALLS = (
    # A process the render starts stays in its session and process group: one killpg ends all.
    "setsid",
    "setpgid",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "tkill",
    "pidfd_open",
    "pidfd_send_signal",
    "pidfd_getfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "unshare",
    "setns",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "keyctl",
    "add_key",
    "request_key",
    "open_by_handle_at",
    "name_to_handle_at",
    "socketpair",
    "process_madvise",
    "process_mrelease",
    "open_tree",
    "move_mount",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    # Landlock does not check a watch: one on the data volume would name other tenants' files.
    "inotify_init",
    "inotify_init1",
    "inotify_add_watch",
    "fanotify_init",
    "fanotify_mark",
    # SysV IPC and POSIX message queues: a segment or queue stays in the pod's IPC namespace
    # after the render is gone, counted against the pod's memory.
    "shmget",
    "shmat",
    "shmctl",
    "shmdt",
    "semget",
    "semop",
    "semtimedop",
    "semctl",
    "msgget",
    "msgsnd",
    "msgrcv",
    "msgctl",
    "mq_open",
    "mq_unlink",
    "mq_timedsend",
    "mq_timedreceive",
    "mq_notify",
    "mq_getsetattr",
)

F_SETOWN_EX = 15
SIGIO_OWNER_FCNTL = (fcntl.F_SETOWN, F_SETOWN_EX, getattr(fcntl, "F_SETSIG", 10))
"""fcntl commands that name the process a file's SIGIO (or any chosen signal) goes to."""
FIOSETOWN, SIOCSPGRP = 0x8901, 0x8902
SIGIO_OWNER_IOCTL = (FIOSETOWN, SIOCSPGRP, termios.TIOCSPGRP, termios.TIOCSTI)
"""ioctl requests that set a signal owner or a terminal's process group, or push input to a terminal."""

# Landlock's ABI 4 network rights and ABI 6 scopes (linux/landlock.h); the binding lacks both.
LANDLOCK_ACCESS_NET_BIND_TCP = 1 << 0
LANDLOCK_ACCESS_NET_CONNECT_TCP = 1 << 1
LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0
LANDLOCK_SCOPE_SIGNAL = 1 << 1

SYSTEM_LIBRARIES = ("/lib", "/lib64", "/usr/lib", "/usr/lib64", "/usr/local/lib", "/usr/share/zoneinfo")


class ConfinementError(Exception):
    """The sandbox could not be set up: nothing of the template was loaded."""


# Why Landlock is not there, by the errno of its version probe. EPERM is a seccomp profile that
# does not list the Landlock syscalls (runc answers EPERM for an unlisted syscall older than the
# profile's newest, ENOSYS for a newer one): the kernel may have it, this process may not use it.
_ALLOW_LANDLOCK = (
    "allow landlock_create_ruleset, landlock_add_rule and landlock_restrict_self in the pod's seccompProfile"
)
_LANDLOCK_MISSING = {
    errno.ENOSYS: ("this kernel lacks it", ""),
    errno.EOPNOTSUPP: ("this kernel has it switched off", "see the boot parameter lsm="),
    errno.EPERM: ("the container's seccomp profile forbids it", _ALLOW_LANDLOCK),
}
_LANDLOCK_HIDDEN = (
    "this kernel lacks it, or the container's seccomp profile hides it",
    f"if the node's kernel has Landlock, {_ALLOW_LANDLOCK}",
)


def _under_seccomp() -> bool:
    """Whether a seccomp filter (a container runtime's profile) already confines this process."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            return any(line.split() == ["Seccomp:", "2"] for line in fh)
    except OSError:
        return False


def _landlock_missing(code: int) -> str | None:
    """The reason for status when the probe failed with `code`; None when it is no such reason."""
    missing = _LANDLOCK_MISSING.get(code)
    if missing is None:
        return None
    if code == errno.ENOSYS and _under_seccomp():
        missing = _LANDLOCK_HIDDEN
    why, hint = missing
    return f"{why} ({'; '.join(filter(None, (os.strerror(code), hint)))})"


@dataclass(frozen=True, slots=True)
class Confinement:
    landlock_abi: int
    """0 when the kernel has no Landlock: only seccomp and the rlimits confine the render."""
    landlock_reason: str = ""
    scoped: bool = False
    """Whether Landlock also scopes signals and abstract unix sockets to the render (ABI 6)."""


def set_rlimits(limits: Limits) -> None:
    cpu = max(1, int(limits.cpu_seconds))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_size_bytes, limits.file_size_bytes))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
    resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def runtime_paths(forbidden: Iterable[str]) -> list[str]:
    """Where the interpreter, its packages and system libraries live, minus any directory that
    holds a forbidden one (the data volume): allowing a parent would allow what is under it."""
    candidates = {sys.prefix, sys.base_prefix, sys.exec_prefix, *SYSTEM_LIBRARIES}
    candidates.update(p for p in sys.path if p)
    no = [os.path.realpath(f) for f in forbidden]
    found = []
    for path in sorted(candidates):
        real = os.path.realpath(path)
        if not os.path.isdir(real):
            continue
        if any(os.path.commonpath([real, f]) == real for f in no):
            continue
        found.append(real)
    return found


class _RulesetAttr(ctypes.Structure):
    """`struct landlock_ruleset_attr` as of ABI 6; the kernel reads the first `size` bytes."""

    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


def ruleset_attr(abi: int) -> tuple[_RulesetAttr, int]:
    """Everything this ABI can handle, and the size of the struct it knows."""
    attr = _RulesetAttr(int(ll.FSAccess.all()), 0, 0)
    size = ctypes.sizeof(ctypes.c_uint64)
    if abi >= 4:
        attr.handled_access_net = LANDLOCK_ACCESS_NET_BIND_TCP | LANDLOCK_ACCESS_NET_CONNECT_TCP
        size += ctypes.sizeof(ctypes.c_uint64)
    if abi >= 6:
        attr.scoped = LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET | LANDLOCK_SCOPE_SIGNAL
        size += ctypes.sizeof(ctypes.c_uint64)
    return attr, size


def write_rights(handled: int) -> ll.FSAccess:
    """Every handled right under the render's own directory except EXECUTE: what a render writes
    is never a program it can start (a script runs as `sh x.sh`)."""
    return ll.FSAccess(handled & ~int(ll.FSAccess.EXECUTE))


EXEC_RIGHTS = ll.FSAccess.READ_FILE | ll.FSAccess.EXECUTE
DEVICES = {"/dev/null": ll.FSAccess.READ_FILE | ll.FSAccess.WRITE_FILE | ll.FSAccess.TRUNCATE}
"""`> /dev/null` in a shell line opens it for writing (and truncation)."""


def landlock(read: Iterable[str], write: Iterable[str], execute: Iterable[str] = ()) -> Confinement:
    try:
        abi = int(ll.landlock_abi_version())
    except ll.SyscallError as exc:
        why = _landlock_missing(exc.errno or 0)
        if why is None:
            raise ConfinementError(f"Landlock: {exc}") from exc
        return Confinement(0, why)
    attr, size = ruleset_attr(abi)
    create = plumbing.get_create_ruleset()
    fd = int(create(ctypes.cast(ctypes.pointer(attr), ctypes.POINTER(plumbing.RulesetAttr)), size, 0))
    try:
        reading = ll.FSAccess.READ_FILE | ll.FSAccess.READ_DIR
        rules = [
            *((p, reading) for p in read),
            *((p, write_rights(attr.handled_access_fs)) for p in write),
            *((p, EXEC_RIGHTS | (ll.FSAccess.READ_DIR if os.path.isdir(p) else 0)) for p in execute),
            *((p, rights) for p, rights in DEVICES.items() if os.path.exists(p)),
        ]
        for path, rights in rules:
            try:
                target = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except (PermissionError, FileNotFoundError):
                # A path this process cannot reach needs no rule: it could not use it anyway, and a
                # rule left out only takes rights away (an interpreter found through a directory
                # the render's user may not search, e.g. a pyenv Python under /root run as nobody).
                continue
            try:
                rule = plumbing.PathBeneathAttr(int(rights), target)
                plumbing.get_add_rule()(fd, 1, ctypes.byref(rule), 0)  # LANDLOCK_RULE_PATH_BENEATH
            finally:
                os.close(target)
        plumbing.get_prctl()(plumbing.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        plumbing.get_restrict_self()(fd, 0)
    finally:
        os.close(fd)
    return Confinement(abi, scoped=abi >= 6)


def seccomp(*, processes: bool = False, scoped: bool = False) -> None:
    """Load the filters. `processes`: fork and exec allowed (with Landlock, which bounds what may
    be executed), minus new namespaces and CLONE_PARENT. `scoped`: Landlock (ABI 6) already keeps
    every signal inside the render's domain, its own process tree; without it a signal may name only
    the render itself or its process group (`kill(0)`, `kill(-render)`), so a process the render
    started can signal neither the render server nor the operator."""
    if sc is None:
        raise ConfinementError(f"seccomp is unavailable ({SECCOMP_MISSING}); install libseccomp2")
    me = os.getpid()
    filt = sc.SyscallFilter(defaction=sc.ALLOW)
    eperm = sc.ERRNO(errno.EPERM)
    filt.add_rule(sc.ERRNO(errno.EACCES), "socket")
    if processes:
        for flag in CLONE_REFUSED:
            filt.add_rule(eperm, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    else:
        filt.add_rule(eperm, "clone", sc.Arg(0, sc.MASKED_EQ, CLONE_THREAD, 0))
        for name in PROCESS_SYSCALLS:
            filt.add_rule(eperm, name)
    filt.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    for name in DENIED_SYSCALLS:
        filt.add_rule(eperm, name)
    if not scoped:
        for name in ("tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo"):
            filt.add_rule(eperm, name, sc.Arg(0, sc.NE, me))
    # The command is an unsigned int: compare the low 32 bits only, as the kernel reads it.
    for cmd in SIGIO_OWNER_FCNTL:
        filt.add_rule(eperm, "fcntl", sc.Arg(1, sc.MASKED_EQ, 0xFFFFFFFF, cmd))
    for request in SIGIO_OWNER_IOCTL:
        filt.add_rule(eperm, "ioctl", sc.Arg(1, sc.MASKED_EQ, 0xFFFFFFFF, request))
    filt.load()
    arch = int(sc.system_arch())
    numbers = {}
    for rule in pidfilter.pid_rules(me, signals=not scoped):
        with contextlib.suppress(OSError, ValueError):
            numbers[rule.syscall] = int(sc.resolve_syscall(arch, rule.syscall))
    pidfilter.load(me, arch, numbers, signals=not scoped)


_WRITING = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _outside(value: object, roots: tuple[str, ...]) -> str | None:
    """The path `value` names when it is outside every root; None otherwise (a descriptor: what it
    names was allowed when it was opened)."""
    if not isinstance(value, str | bytes | os.PathLike):
        return None
    path = os.fsdecode(value)
    real = os.path.realpath(path)
    return None if any(os.path.commonpath([real, root]) == root for root in roots) else path


def path_guard(read: Iterable[str], write: Iterable[str]) -> None:
    """Without Landlock: refuse, in this interpreter, every file Python opens or lists outside
    `read` and `write` (and every file it opens for writing outside `write`), as the Landlock
    ruleset would. An audit hook (PEP 578) cannot be removed, and it is all that is needed here
    because in this mode no template code runs: `_jinja_extensions` are refused and copier's Jinja
    is sandboxed. It is the catch-all behind the named refusals (`_external_data` outside the
    template, in templaterender.py): whatever else copier may open for a template is held to the
    same paths."""
    writable = tuple(os.path.realpath(p) for p in write)
    readable = tuple(os.path.realpath(p) for p in read) + writable

    def hook(event: str, args: tuple[object, ...]) -> None:
        if event == "open":
            path, flags = args[0], args[2]
            roots = writable if isinstance(flags, int) and flags & _WRITING else readable
        elif event in ("os.listdir", "os.scandir"):
            path, roots = args[0], readable
        else:
            return
        name = _outside(path, roots)
        if name is not None:
            raise PermissionError(
                errno.EACCES, "the sandbox refused it (no Landlock: a template may read only itself)", name
            )

    sys.addaudithook(hook)


def confine(limits: Limits, read: list[str], write: list[str], forbidden: list[str]) -> Confinement:
    """Confine this process for good. Call before anything of the template is read. With
    Landlock the render may start the programs of `programs.allowed_programs()` (and every
    process it starts is held to the same confinement); without it, none."""
    read = read + runtime_paths(forbidden)
    found = landlock(read, write, programs.allowed_programs(forbidden))
    seccomp(processes=found.landlock_abi > 0, scoped=found.scoped)
    set_rlimits(limits)
    if found.landlock_abi == 0:
        path_guard(read, write)
    return found
