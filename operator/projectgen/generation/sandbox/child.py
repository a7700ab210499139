"""The render process: `main()`, in a process the render server (`forkserver.py`) forked for
one render (or `python -I -m projectgen.generation.sandbox.child` on its own).

It reads one request (JSON) on stdin, confines itself (`confine.py`), then renders with copier
(`generation/templaterender.py`) or cookiecutter (`generation/cookiecutterrender.py`) and writes
one result line (JSON) to the stdout it had at start; anything the template prints goes to
stderr, which the parent reads but never reports. Template code runs in this process and can
write a line of its own to that descriptor: the parent takes the result as the render's claim
about itself, never as a fact about the operator (`runner.py`). copier, cookiecutter and their
dependencies are imported before confinement (by the server, once: they are the image's own
code); nothing of the template is read before it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import os
import resource
import shutil
import stat
import sys
import tempfile
from typing import Any, TextIO

from projectgen.generation import cookiecutterrender, templaterender
from projectgen.generation.sandbox import pidsgroup, programs
from projectgen.generation.sandbox.confine import ConfinementError, confine
from projectgen.generation.sandbox.limits import Limits


def _result(out: TextIO, payload: dict[str, Any]) -> None:
    out.write(json.dumps(payload) + "\n")
    out.flush()


def _refused_program(exc: OSError) -> str | None:
    """The program an exec refusal named (EACCES on an executable file off the allowlist)."""
    if exc.errno != errno.EACCES or not exc.filename:
        return None
    name = os.fsdecode(exc.filename)
    path = name if "/" in name else shutil.which(name, path=programs.SEARCH_PATH)
    if not path:
        return None
    with contextlib.suppress(OSError):
        st = os.stat(path)
        if stat.S_ISREG(st.st_mode) and st.st_mode & 0o111:
            return name
    return None


def main() -> int:
    result = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    request = json.load(sys.stdin)
    # The pod's OOM killer takes a render, never the operator.
    with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as fh:
        fh.write("1000")
    limits = Limits.from_json(request["limits"])
    box_tmp = request["tmp"]
    if not pidsgroup.nproc_binds():
        pidsgroup.enter(pidsgroup.own_dir(), limits.processes)
    try:
        found = confine(
            limits,
            read=[request["checkout"]],
            write=[request["box"]],
            forbidden=request.get("forbidden", []),
        )
    except (ConfinementError, OSError) as exc:
        _result(result, {"error": f"the render sandbox could not be set up: {exc}", "sandbox": True})
        return 0
    os.environ.clear()
    if found.landlock_abi > 0:
        os.environ.update(programs.environment(box_tmp, request["box"]))
    else:
        os.environ.update(
            {"TMPDIR": box_tmp, "HOME": box_tmp, "TZ": "UTC", "LC_ALL": "C.UTF-8", "PATH": "/nonexistent"}
        )
    programs.enable(found.landlock_abi > 0, found.landlock_reason)
    tempfile.tempdir = box_tmp
    os.chdir(request["cwd"])
    templaterender.freeze_clock(dt.datetime.fromisoformat(request["clock"]))
    try:
        engine = cookiecutterrender if request.get("engine") == "cookiecutter" else templaterender
        done = engine.render(
            request, extensions_allowed=found.landlock_abi > 0, why_not=found.landlock_reason
        )
    except templaterender.RenderFailed as exc:
        _result(result, {"error": str(exc)})
        return 0
    except MemoryError:
        _result(result, {"error": "memory", "limit": True})
        return 0
    except OSError as exc:
        refused = _refused_program(exc)
        if exc.errno == errno.EAGAIN and exc.filename is None:
            # fork's EAGAIN: the pids cgroup or RLIMIT_NPROC (a render reads no non-blocking file)
            _result(result, {"error": "processes", "limit": "processes"})
            return 0
        if refused is not None:
            text = (
                f"the sandbox refused to run {refused!r}: a template may run only "
                f"{', '.join(programs.allowed_names())}"
            )
        elif exc.errno in (errno.EACCES, errno.EPERM):
            what = f" to {exc.filename!r}" if exc.filename else ""
            text = f"the sandbox denied it access{what} ({exc.strerror}): a template may read only itself"
        else:
            text = f"{exc.strerror or exc}" + (f": {exc.filename!r}" if exc.filename else "")
        _result(result, {"error": text, "errno": exc.errno})
        return 0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    _result(result, {"ok": True, "landlock": found.landlock_abi, "peak_mb": peak_mb, **done})
    return 0


if __name__ == "__main__":
    sys.exit(main())
