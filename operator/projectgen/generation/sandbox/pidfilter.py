"""A second seccomp filter, in classic BPF written here: pid-directed calls may name only the
render itself.

Why not libseccomp (`confine.seccomp`): "this argument is 0 or the caller's pid" is an OR of two
comparisons on one argument, which libseccomp refuses (EINVAL); each of its rules compares an
argument once. The kernel runs every filter a process has loaded and keeps the strictest answer,
so this filter only adds refusals to libseccomp's. It leaves other architectures and the x32
numbers alone: libseccomp's filter kills those.

The calls (the class, from the syscall table: each takes a pid and changes, or reads the memory
layout of, that process; all succeed against any process of the same uid unless refused):
`prlimit64`, `setpriority`, `ioprio_set`, `sched_setaffinity`, `sched_setscheduler`,
`sched_setparam`, `sched_setattr`, `migrate_pages`, `move_pages`, `get_robust_list`. Allowed: pid
0 (the calling thread or process, as each call defines it) and the render's own pid (its thread
group id, the same in all its threads). A thread id of one of the render's other threads is
refused: the render cannot know its threads' ids in advance, and nothing it runs needs them
(glibc's `setrlimit`, `nice` and `sched_*` use 0). `setpriority` and `ioprio_set` also take a
"which": only the process form is allowed (a process group or user form would reach every process
of the uid). Only the low 32 bits of each argument are compared: the kernel reads these
arguments as `int`, ignoring the upper half of the register.

The signal calls compare one value (the render's own pid) and stay with libseccomp; the calls
that take a pidfd (`pidfd_*`, `process_madvise`, `process_mrelease`, `kcmp`) are refused
outright there.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

PRIO_PROCESS = 0
IOPRIO_WHO_PROCESS = 1

_LD_ABS_W = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_JGE_K = 0x35  # BPF_JMP | BPF_JGE | BPF_K
_RET_K = 0x06  # BPF_RET | BPF_K
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_X32_SYSCALL_BIT = 0x40000000
_OFF_NR, _OFF_ARCH, _OFF_ARGS = 0, 4, 16
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2


@dataclass(frozen=True, slots=True)
class PidRule:
    """A call refused unless each listed argument holds one of its values."""

    syscall: str
    args: tuple[tuple[int, tuple[int, ...]], ...]


def pid_rules(me: int, *, signals: bool = False) -> list[PidRule]:
    """`signals`: also `kill`, allowed only for the render (`me`), its process group (`-me`) and
    the caller's own group (0): used when Landlock cannot scope signals (before ABI 6)."""
    own = (0, me)
    pid_first = (
        "prlimit64",
        "sched_setaffinity",
        "sched_setscheduler",
        "sched_setparam",
        "sched_setattr",
        "migrate_pages",
        "move_pages",
        "get_robust_list",
    )
    rules = [PidRule(name, ((0, own),)) for name in pid_first]
    rules.append(PidRule("setpriority", ((0, (PRIO_PROCESS,)), (1, own))))
    rules.append(PidRule("ioprio_set", ((0, (IOPRIO_WHO_PROCESS,)), (1, own))))
    if signals:
        rules.append(PidRule("kill", ((0, (0, me, -me)),)))
    return rules


Instruction = tuple[int, int, int, int]


def _arg_offset(index: int) -> int:
    """Where the low 32 bits of argument `index` sit in `struct seccomp_data`."""
    return _OFF_ARGS + 8 * index + (4 if sys.byteorder == "big" else 0)


def _block(number: int, rule: PidRule, deny: int) -> list[Instruction]:
    checks: list[Instruction] = []
    for index, allowed in rule.args:
        checks.append((_LD_ABS_W, 0, 0, _arg_offset(index)))
        for k, value in enumerate(allowed):
            checks.append((_JEQ_K, len(allowed) - k, 0, value & 0xFFFFFFFF))
        checks.append((_RET_K, 0, 0, deny))
    checks.append((_RET_K, 0, 0, _RET_ALLOW))
    return [(_LD_ABS_W, 0, 0, _OFF_NR), (_JEQ_K, 0, len(checks), number), *checks]


def program(rules: Iterable[PidRule], arch: int, resolve: Mapping[str, int], code: int) -> list[Instruction]:
    """The filter as instructions: for the native `arch`, each rule's syscall number (from
    `resolve`; names the architecture lacks are skipped) checked as described above."""
    deny = _RET_ERRNO | (code & 0xFFFF)
    body: list[Instruction] = []
    for rule in rules:
        number = resolve.get(rule.syscall, -1)
        if number >= 0:
            body += _block(number, rule, deny)
    body.append((_RET_K, 0, 0, _RET_ALLOW))
    head: list[Instruction] = [
        (_LD_ABS_W, 0, 0, _OFF_ARCH),
        (_JEQ_K, 0, 0, arch & 0xFFFFFFFF),  # jf patched below: another architecture
        (_LD_ABS_W, 0, 0, _OFF_NR),
        (_JGE_K, 0, 0, _X32_SYSCALL_BIT),  # jt patched below: x32
    ]
    to_end = len(body) - 1
    if to_end + 2 > 255:
        raise ValueError("pid filter too long for one jump")
    head[1] = (_JEQ_K, 0, to_end + 2, head[1][3])
    head[3] = (_JGE_K, to_end, 0, head[3][3])
    return head + body


class _SockFilter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    ]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def load(me: int, arch: int, numbers: Mapping[str, int], *, signals: bool = False) -> None:
    """Load the filter into this process (after libseccomp's, which set no_new_privs). `arch` is
    the native AUDIT_ARCH value and `numbers` the syscall numbers, both from libseccomp."""
    code = program(pid_rules(me, signals=signals), arch, numbers, errno.EPERM)
    filters = (_SockFilter * len(code))(*(_SockFilter(*ins) for ins in code))
    fprog = _SockFprog(len(code), filters)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"loading the pid filter: {os.strerror(err)}")
