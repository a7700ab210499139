"""How many API requests the operator makes per resource (issue 26), counted by a real
kube-apiserver: its audit log records every request with the user who made it, and the operator
runs as a user of its own. These are bounds on behaviour (how many requests, never how fast):
creating a project with an export, a template move across a fleet, and a settled fleet at rest.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from support import EXPORTS, GROUP, PROJECTS, VERSION, OperatorProcess, create, export_body, inline_source
from support import project_body as _project_body
from test_template_follow import FILES, Template, template_source

from projectgen_dev.ci import unavailable
from projectgen_dev.controlplane import BinariesNotFoundError, ControlPlane, find_binaries
from projectgen_dev.gitserver import GitHTTPServer

CRD_DIR = Path(__file__).resolve().parents[2] / "crds"
OPERATOR_USER = "projectgen-budget"
POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  users: [projectgen-budget]
- level: None
"""
BUDGET = 3.0
"""Requests per resource, Events not counted: a bare client needs 2 per project (Generating,
Completed) and 3 per export (owner, Exporting, Completed) on creation, 2 per resource after a move."""


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ControlPlane, Path]]:
    """A control plane of this module's own, writing an audit log of the operator's requests."""
    try:
        bin_dir = find_binaries()
    except BinariesNotFoundError as exc:
        unavailable(f"control plane binaries unavailable: {exc}")
    tmp = tmp_path_factory.mktemp("audit")
    (tmp / "policy.yaml").write_text(POLICY)
    log = tmp / "audit.log"
    args = {"--audit-policy-file": str(tmp / "policy.yaml"), "--audit-log-path": str(log)}
    with ControlPlane(bin_dir, apiserver_args=args) as cp:
        cp.install(CRD_DIR)
        yield cp, log


class Requests:
    """The operator's requests in one namespace, from the audit log, since `mark()`."""

    def __init__(self, log: Path, namespace: str) -> None:
        self.log, self.namespace, self.offset = log, namespace, 0

    def mark(self) -> None:
        self.offset = self.log.stat().st_size if self.log.exists() else 0

    def entries(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        with self.log.open("rb") as fh:
            fh.seek(self.offset)
            lines = fh.read().decode().splitlines()
        out = []
        for line in lines:
            entry = json.loads(line)
            ref = entry.get("objectRef") or {}
            if entry.get("stage") == "ResponseComplete" and ref.get("namespace") == self.namespace:
                out.append(entry)
        return out

    def counted(self) -> Counter[str]:
        """verb resource[/subresource] -> count; not the watches and lists, not Events."""
        out: Counter[str] = Counter()
        for e in self.entries():
            ref = e["objectRef"]
            if e["verb"] in ("watch", "list") or ref.get("resource") == "events":
                continue
            out[
                f"{e['verb']} {ref.get('resource')}{'/' + ref['subresource'] if ref.get('subresource') else ''}"
            ] += 1
        return out

    def quiet(self, seconds: float = 4.0, timeout: float = 120.0) -> None:
        """Until the operator made no request in this namespace for `seconds`."""
        deadline = time.monotonic() + timeout
        last, since = len(self.entries()), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.5)
            now = len(self.entries())
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= seconds:
                return
        raise AssertionError("the operator did not come to rest")


def ready(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    return status.get("observedGeneration") == obj["metadata"].get("generation") and any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
    )


def listed(api: client.ApiClient, namespace: str, plural: str) -> list[dict[str, Any]]:
    items: Any = client.CustomObjectsApi(api).list_namespaced_custom_object(GROUP, VERSION, namespace, plural)
    return list(items["items"])


def wait_all(api: client.ApiClient, namespace: str, check: Any, n: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        objs = listed(api, namespace, PROJECTS) + listed(api, namespace, EXPORTS)
        if sum(1 for o in objs if check(o, objs)) >= n:
            return
        time.sleep(0.3)
    raise AssertionError(f"not all {n} resources got there in {timeout} s")


def delivered(obj: dict[str, Any], objs: list[dict[str, Any]]) -> bool:
    """Ready, and an export of its project's current content."""
    if not ready(obj):
        return False
    if obj["kind"] == "GeneratedProject":
        return True
    target = obj["spec"]["generatedProjectRef"]["name"]
    project = next(o for o in objs if o["kind"] == "GeneratedProject" and o["metadata"]["name"] == target)
    return bool(obj["status"].get("exportedContentHash") == (project.get("status") or {}).get("contentHash"))


def start_operator(cp: ControlPlane, tmp: Path, namespace: str, **env: str) -> OperatorProcess:
    kubeconfig = cp.user_kubeconfig(OPERATOR_USER, groups=["system:masters"])
    return OperatorProcess(kubeconfig, tmp / "data", tmp / "operator.log", namespaces=(namespace,), env=env)


def new_namespace(cp: ControlPlane, api: client.ApiClient, name: str) -> str:
    client.CoreV1Api(api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    return name


def per_resource(requests: Counter[str], resources: int) -> float:
    return sum(requests.values()) / resources


def test_creating_projects_with_exports_costs_at_most_three_requests_each(
    audited: tuple[ControlPlane, Path], tmp_path: Path
) -> None:
    cp, log = audited
    api = cp.api_client()
    namespace = new_namespace(cp, api, "budget-create")
    requests = Requests(log, namespace)
    n = 8
    with start_operator(cp, tmp_path, namespace):
        requests.mark()
        for i in range(n):
            create(
                api, PROJECTS, namespace, _project_body(f"p{i}", [inline_source({"README.md": f"# {i}\n"})])
            )
            create(api, EXPORTS, namespace, export_body(f"p{i}-zip", f"p{i}", "zip"))
        wait_all(api, namespace, delivered, 2 * n)
        requests.quiet()
        counted = requests.counted()
    assert per_resource(counted, 2 * n) <= BUDGET, counted
    # No read of the project per export (kopf's index has it), one metadata patch per resource.
    assert counted["get generatedprojects"] == 0, counted
    assert counted["patch generatedprojects"] <= n and counted["patch repositoryexports"] <= n, counted


def test_a_template_move_costs_at_most_three_requests_each_and_a_settled_fleet_none(
    audited: tuple[ControlPlane, Path], tmp_path: Path
) -> None:
    cp, log = audited
    api = cp.api_client()
    namespace = new_namespace(cp, api, "budget-move")
    requests = Requests(log, namespace)
    n = 5
    with GitHTTPServer(tmp_path / "git") as server:
        tpl = Template(server, "budget")
        tpl.release("v1.0.0", FILES)
        env = {"PROJECTGEN_TEMPLATE_MIN_INTERVAL": "1s"}
        with start_operator(cp, tmp_path, namespace, **env):
            for i in range(n):
                source = template_source(tpl.url, ">=1,<2", updateInterval="2s")
                create(api, PROJECTS, namespace, _project_body(f"p{i}", [source]))
                create(api, EXPORTS, namespace, export_body(f"p{i}-zip", f"p{i}", "zip"))
            wait_all(api, namespace, delivered, 2 * n)
            requests.quiet()

            requests.mark()
            time.sleep(8)  # four check intervals of a settled fleet: the checks find nothing new
            assert requests.counted() == Counter(), "a settled fleet made requests"
            assert [e for e in requests.entries() if e["verb"] not in ("watch", "list")] == []

            tpl.release("v1.1.0")
            wait_all(
                api,
                namespace,
                lambda o, objs: (
                    delivered(o, objs)
                    and (o["kind"] != "GeneratedProject" or o["status"]["template"]["tag"] == "v1.1.0")
                ),
                2 * n,
            )
            requests.quiet()
            counted = requests.counted()
    assert per_resource(counted, 2 * n) <= BUDGET, counted
