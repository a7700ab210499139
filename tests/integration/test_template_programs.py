"""Templates that run programs, on a running operator (issue 25): copier `_tasks` with
`tasks: Run` run in the render sandbox; hostile programs each fail only their own resource, leave
nothing running, and a render in another namespace completes on time."""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path

import kubernetes
import pytest
from support import PROJECTS, OperatorProcess, create, other_namespace, project_body, wait_phase
from test_generatedproject import git_server, publish_template

from projectgen_dev.gitserver import GitHTTPServer

__all__ = ["git_server"]

pytestmark = pytest.mark.usefixtures("operator")

MARK = secrets.token_hex(4)
OUTSIDE = f"/tmp/projectgen-pwned-{MARK}"
DAEMON_SLEEP = 600 + int(MARK, 16) % 1000  # a number only this test's daemon sleeps for

# Forks until refused; every child sleeps (the render's end must kill them all).
FORK_BOMB = """python -c "exec('import os, time\\nwhile True:\\n    if os.fork() == 0: time.sleep(900)')\""""

# name -> (the task, the phase it ends in, what the status says)
HOSTILE = {
    "fork-bomb": (FORK_BOMB, "Failed", ("limit on processes", "wall-clock limit of 20 s")),
    "daemon": (
        f'python -c "import os, time; os.fork() or time.sleep({DAEMON_SLEEP})"',
        "Completed",
        (),
    ),
    "socket": ('python -c "import socket; socket.socket()"', "Failed", ("need the network",)),
    "exec-off-list": ("id -u > uid.txt", "Failed", ("Permission denied", "run only python, sh, bash, git")),
    "token": (
        "cat /var/run/secrets/kubernetes.io/serviceaccount/token > t",
        "Failed",
        ("serviceaccount/token",),
    ),
    "write-outside": (f"echo x > {OUTSIDE}", "Failed", ("Permission denied",)),
    "kill-parent": ("kill -KILL $PPID", "Failed", ("killed by a signal (SIGKILL)",)),
    "kill-everything": ("kill -KILL -1", "Failed", ("killed by a signal (SIGKILL)",)),
}


def processes_with(text: bytes) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if text in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(int(pid))
            except OSError:
                continue
    return found


def test_hostile_programs_fail_alone_and_leave_nothing(
    api_client: kubernetes.client.ApiClient,
    namespace: str,
    operator: OperatorProcess,
    git_server: GitHTTPServer,
) -> None:
    assert operator.proc is not None
    other = other_namespace(api_client, "programs-other")
    for name, (task, _, _) in HOSTILE.items():
        url = publish_template(
            git_server,
            f"hostile-{name}",
            {b"copier.yml": f"_tasks:\n  - {json.dumps(task)}\n".encode(), b"a.txt": b"a\n"},
        )
        source = {"template": {"url": url, "tasks": "Run", "limits": {"wallSeconds": 20}}}
        create(api_client, PROJECTS, namespace, project_body(name, [source]))
    normal = publish_template(
        git_server,
        "programs-normal",
        {
            b"copier.yml": b'name:\n  default: demo\n_tasks:\n  - "git init -q && git config user.name > who.txt || echo nobody > who.txt"\n',
            b"a.txt.jinja": b"{{ name }}\n",
        },
    )
    started = time.monotonic()
    create(
        api_client,
        PROJECTS,
        other,
        project_body("normal", [{"template": {"url": normal, "tasks": "Run"}}]),
    )
    done = wait_phase(api_client, PROJECTS, other, "normal", "Completed", "Failed", timeout=45)
    assert done["status"]["phase"] == "Completed", done["status"]
    assert time.monotonic() - started < 45

    for name, (_, phase, expected) in HOSTILE.items():
        obj = wait_phase(api_client, PROJECTS, namespace, name, "Completed", "Failed", timeout=90)
        status = obj["status"]
        assert status["phase"] == phase, (name, status)
        if expected:
            assert any(e in status.get("errorMessage", "") for e in expected), (
                name,
                status.get("errorMessage"),
            )
    assert not Path(OUTSIDE).exists()
    assert operator.proc.poll() is None, "the operator died"
    deadline = time.monotonic() + 15
    while processes_with(f"time.sleep({DAEMON_SLEEP})".encode()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not processes_with(f"time.sleep({DAEMON_SLEEP})".encode()), "the daemon outlived its render"
