"""Template renders on a running operator: one runaway template does not hold up another
namespace, and deleting it kills its render process; skipped tasks are reported."""

from __future__ import annotations

import os
import time
from pathlib import Path

import kubernetes
import pytest
from support import (
    PROJECTS,
    OperatorProcess,
    create,
    other_namespace,
    project_body,
    wait_event,
    wait_for,
    wait_phase,
)
from test_generatedproject import git_server, publish_template

from projectgen_dev.gitserver import GitHTTPServer

__all__ = ["git_server"]

pytestmark = pytest.mark.usefixtures("operator")

RUNAWAY = {
    b"copier.yml": b"name:\n  default: x\n",
    b"a.txt.jinja": b"{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
}


def render_children(operator_pid: int) -> list[int]:
    """The operator's render processes: children of its render server (`sandbox/forkserver.py`)."""
    parents: dict[int, int] = {}
    servers = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        parents[int(pid)] = int(stat.rsplit(")", 1)[1].split()[1])
        if parents[int(pid)] == operator_pid and b"projectgen.generation.sandbox.forkserver" in cmdline:
            servers.add(int(pid))
    return [pid for pid, ppid in parents.items() if ppid in servers]


def test_runaway_template_does_not_delay_another_namespace_and_dies_with_its_resource(
    api_client: kubernetes.client.ApiClient,
    namespace: str,
    operator: OperatorProcess,
    git_server: GitHTTPServer,
) -> None:
    assert operator.proc is not None
    other = other_namespace(api_client, "other-tenant")
    runaway = publish_template(git_server, "runaway", RUNAWAY)
    normal = publish_template(
        git_server,
        "normal",
        {
            b"copier.yml": b"name:\n  default: demo\n_tasks:\n  - make setup\n",
            **{f"src/m{i}.py.jinja".encode(): b"NAME = '{{ name }}'\n" for i in range(20)},
        },
    )
    create(api_client, PROJECTS, namespace, project_body("runaway", [{"template": {"url": runaway}}]))
    deadline = time.monotonic() + 60
    while not render_children(operator.proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert render_children(operator.proc.pid), "the runaway render did not start"

    started = time.monotonic()
    create(api_client, PROJECTS, other, project_body("normal", [{"template": {"url": normal}}]))
    done = wait_phase(api_client, PROJECTS, other, "normal", "Completed", timeout=45)
    assert time.monotonic() - started < 45
    assert done["status"]["totalFiles"] == 20
    messages = " ".join(c.get("message", "") for c in done["status"]["conditions"])
    assert "_tasks were skipped" in messages and "make setup" in messages
    wait_event(api_client, other, "normal", lambda e: e.type == "Warning" and "make setup" in e.message)
    runaway_now = wait_for(api_client, PROJECTS, namespace, "runaway", lambda o: True)
    assert (runaway_now.get("status") or {}).get("phase") == "Generating"
    running = render_children(operator.proc.pid)
    assert running

    kubernetes.client.CustomObjectsApi(api_client).delete_namespaced_custom_object(
        "projectgen.io", "v1alpha1", namespace, PROJECTS, "runaway"
    )
    deadline = time.monotonic() + 30
    while any(os.path.exists(f"/proc/{pid}") for pid in running) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(os.path.exists(f"/proc/{pid}") for pid in running), (
        "the render process outlived its resource"
    )
    assert not render_children(operator.proc.pid)
