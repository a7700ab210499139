"""Programs a render may start: the allowlist, their environment, and how template-side code
(copier tasks here; cookiecutter hooks too) runs one inside the render sandbox.

A render may fork and exec only with Landlock: every process it starts inherits its Landlock
domain, its seccomp filters and its rlimits, and stays in its process group (`setsid` and
`setpgid` are refused), so one `killpg` by the render server ends the whole tree. Landlock's
EXECUTE right is granted only to `allowed_programs()`; nothing under the checkout or the output
may be executed (a script runs as `sh script.sh` or `python script.py`). Without Landlock an exec
allowlist cannot be enforced (seccomp cannot see paths): fork and exec stay refused, and
`run()` raises `ProgramsRefused`.

See PROGRAMS.md beside this module for the contract with code running in the child.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO

SEARCH_PATH = "/usr/bin:/bin"
"""Where the allowlist's programs are looked up."""


def search_path() -> str:
    """PATH inside the sandbox: the interpreter's own directory first (`python` is the render's
    interpreter, with its packages; the scripts beside it are not executable there), then the
    system's."""
    return f"{os.path.dirname(sys.executable)}:{SEARCH_PATH}"


PROGRAMS = (
    "sh",
    "bash",
    "git",
    # File tools that copier `_tasks` and cookiecutter `.sh` hooks use most: they do nothing a
    # template could not do in Python, and a task line is shell.
    "cat",
    "cp",
    "mv",
    "rm",
    "mkdir",
    "rmdir",
    "ln",
    "chmod",
    "touch",
    "ls",
    "sed",
    "grep",
    "head",
    "tail",
    "sort",
    "tr",
    "basename",
    "dirname",
    "true",
    "false",
    "echo",
    "printf",
    "test",
    "[",
)
"""Programs (looked up on `SEARCH_PATH`) a render may execute, besides the interpreter."""

GIT_HELPERS = ("/usr/lib/git-core",)
"""git runs its own helpers from here (`git-sh-setup`-based commands, `git-remote-*`)."""

TAIL_LINES = 20
TAIL_CHARS = 1500


class ProgramsRefused(Exception):
    """The sandbox cannot run programs (no Landlock): the message says why, for status."""


@dataclass(frozen=True, slots=True)
class ProgramFailed(Exception):
    """A program exited non-zero (or by a signal) or did not finish in time."""

    what: str
    """How the failing program is named in messages (a task's command line, a hook's name)."""
    returncode: int | None
    """The exit code, `-signal`, or None when it was stopped at its timeout."""
    stderr_tail: str

    def __str__(self) -> str:
        return describe_failure(self.what, self.returncode, self.stderr_tail)


NETWORK_HINTS = (
    "could not resolve",
    "name resolution",
    "name or service not known",
    "network is unreachable",
    "unable to create socket",
    "failed to connect",
    "couldn't connect",
    "connection refused",
    "socket",
    "urlopen error",
    "connecterror",
    "temporary failure",
)


FORK_HINTS = ("cannot fork", "fork: retry", "resource temporarily unavailable")


def describe_failure(what: str, returncode: int | None, stderr_tail: str) -> str:
    if returncode is None:
        how = "did not finish within its time and was stopped"
    elif returncode < 0:
        how = f"was ended by signal {-returncode}"
    else:
        how = f"exited with code {returncode}"
    text = f"{what} {how}"
    lower = stderr_tail.lower()
    if any(hint in lower for hint in FORK_HINTS):
        text += "; it reached the render's limit on processes"
    elif any(hint in lower for hint in NETWORK_HINTS):
        text += "; it seems to need the network, which programs in the render sandbox do not have"
    elif "permission denied" in lower or "operation not permitted" in lower:
        text += (
            "; the sandbox refused something it tried (programs may read only the template, write only "
            f"the output, and run only {', '.join(allowed_names())})"
        )
    if stderr_tail:
        text += f"; last lines of its stderr: {stderr_tail}"
    return text


def allowed_names() -> list[str]:
    return ["python", *PROGRAMS]


def interpreter() -> str:
    """The running interpreter's real file (a venv's `python` is a symlink to it)."""
    return os.path.realpath(sys.executable)


@functools.cache
def _allowed() -> frozenset[str]:
    found = {interpreter()}
    for name in PROGRAMS:
        path = shutil.which(name, path=SEARCH_PATH)
        if path:
            found.add(os.path.realpath(path))
    found.update(os.path.realpath(p) for p in GIT_HELPERS if os.path.isdir(p))
    found.update(_loaders())
    return frozenset(found)


def allowed_programs(forbidden: Iterable[str] = ()) -> list[str]:
    """Real paths of the files a render may execute: the interpreter, its dynamic loader, the
    programs of `PROGRAMS` found on `SEARCH_PATH`, and git's helper directory. Any path under a
    forbidden directory is left out."""
    no = [os.path.realpath(f) for f in forbidden]
    return sorted(p for p in _allowed() if not any(os.path.commonpath([p, f]) == f for f in no))


def _loaders() -> set[str]:
    """The ELF interpreter(s) the kernel opens to start a dynamic program (EXECUTE is checked
    on it too)."""
    found = set()
    for pattern_dir in ("/lib64", "/lib", "/usr/lib64", "/usr/lib"):
        if not os.path.isdir(pattern_dir):
            continue
        for name in os.listdir(pattern_dir):
            if name.startswith("ld-linux") and ".so" in name:
                found.add(os.path.realpath(os.path.join(pattern_dir, name)))
    return found


def environment(home: str, box: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The whole environment of a program a render starts: nothing of the operator's. HOME and
    TMPDIR are the render's own scratch directory; git reads no system or global configuration
    (HOME holds none), so `git config user.name` answers nothing, and git never looks for a
    repository above the render's box."""
    env = {
        "HOME": home,
        "TMPDIR": home,
        "XDG_CONFIG_HOME": os.path.join(home, ".config"),
        "TZ": "UTC",
        "LC_ALL": "C.UTF-8",
        "PATH": search_path(),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.path.join(home, ".gitconfig"),
        "GIT_CEILING_DIRECTORIES": os.path.dirname(box.rstrip("/")),
        "GIT_TERMINAL_PROMPT": "0",
    }
    env.update(extra or {})
    return env


def tail(data: bytes) -> str:
    """The last lines of a program's output, one line, for a message."""
    text = data.decode("utf-8", "replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()][-TAIL_LINES:]
    joined = " | ".join(lines)
    return joined[-TAIL_CHARS:]


ENABLED = False
"""Set by the child once confinement allows programs (Landlock present)."""
WHY_NOT = "the render sandbox was not set up"


def enable(allowed: bool, why_not: str = "") -> None:
    global ENABLED, WHY_NOT
    ENABLED, WHY_NOT = allowed, why_not


def run(
    argv: Sequence[str] | str,
    *,
    what: str,
    cwd: str,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    shell: bool = False,
    stdin: bytes | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run one program inside the render sandbox (call only in the confined child).

    The environment is `os.environ` (the child set it to `environment(...)`) plus `env`. stdout
    is passed through to the render's stderr (the operator's debug log, never status); stderr is
    captured and its tail goes into `ProgramFailed`. Raises ProgramsRefused without Landlock,
    ProgramFailed on a non-zero exit or at `timeout` (the program's process group is the
    render's: a timeout kills the program's own process only, the render server kills the rest)."""
    if not ENABLED:
        raise ProgramsRefused(
            f"{what} cannot run: programs need Landlock in the render sandbox, and {WHY_NOT}"
        )
    full_env = {**os.environ, **(env or {})}
    # stderr to a file, not a pipe: a program that leaves a process behind (holding the pipe)
    # must not keep its caller waiting; the render server kills what is left when the render ends.
    with tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.run(
                argv,
                shell=shell,
                cwd=cwd,
                env=full_env,
                input=stdin if stdin is not None else b"",
                stdout=sys.stderr.fileno(),
                stderr=err,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise ProgramFailed(what, None, _read_tail(err)) from None
        except PermissionError as exc:
            raise ProgramFailed(what, 126, f"{exc.filename or argv}: {exc.strerror}") from None
        except FileNotFoundError as exc:
            raise ProgramFailed(what, 127, f"{exc.filename or argv}: not found") from None
        if proc.returncode:
            raise ProgramFailed(what, proc.returncode, _read_tail(err))
        err.seek(0)
        proc.stderr = err.read(READ_CAP)
    return proc


READ_CAP = 1 << 20


def _read_tail(fh: IO[bytes]) -> str:
    size = fh.seek(0, os.SEEK_END)
    fh.seek(max(0, size - 64 * 1024))
    return tail(fh.read())
