"""What GitOps tools see: live resources, reconciled by the session operator, judged by kstatus
itself (sigs.k8s.io/cli-utils, what Flux and kpt use; Argo CD's check is manifests/argocd/health.lua)
and by `kubectl wait`.

| resource | kstatus |
| --- | --- |
| Completed GeneratedProject, Completed export | Current |
| GeneratedProject whose template fails | Failed |
| GeneratedProject waiting for a missing ConfigMap | InProgress |
| export waiting for a missing GeneratedProject | InProgress |
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import pytest
from kubernetes import client
from support import (
    EXPORTS,
    PROJECTS,
    condition,
    create,
    export_body,
    get,
    inline_source,
    project_body,
    wait_for,
    wait_phase,
)

from projectgen_dev import kstatus
from projectgen_dev.ci import unavailable

if TYPE_CHECKING:
    from conftest import Kubectl

pytestmark = pytest.mark.usefixtures("operator")


@pytest.fixture(scope="module")
def kstatus_helper() -> None:
    """The kstatus helper, built once from the Go module proxy (a skip without Go, a failure in CI)."""
    try:
        kstatus.ensure_binary()
    except kstatus.KstatusUnavailable as exc:
        unavailable(f"kstatus helper unavailable: {exc}")


def waiting(obj: dict[str, Any]) -> bool:
    """Pending for the current generation, with Reconciling=True (waiting for something)."""
    status = obj.get("status") or {}
    return (
        status.get("phase") == "Pending"
        and status.get("observedGeneration") == obj["metadata"]["generation"]
        and condition(obj, "Reconciling").get("status") == "True"
    )


def kubectl_wait(kubectl: Kubectl, namespace: str, target: str, cond: str, timeout: int) -> tuple[int, float]:
    started = time.monotonic()
    proc = kubectl(
        "wait", "-n", namespace, f"--for=condition={cond}", f"--timeout={timeout}s", target, check=False
    )
    return proc.returncode, time.monotonic() - started


def bad_template(api: client.ApiClient, namespace: str) -> dict[str, Any]:
    body = client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="tpl"),
        data={"copier": "_tasks:\n  - touch /tmp/pwned\nname:\n  type: str\n", "readme": "{{ name }}\n"},
    )
    client.CoreV1Api(api).create_namespaced_config_map(namespace, body)
    items = [{"key": "copier", "path": "copier.yml"}, {"key": "readme", "path": "README.md.jinja"}]
    return {
        "template": {"configMap": {"name": "tpl", "items": items}, "data": {"name": "x"}, "tasks": "Fail"}
    }


@pytest.mark.matrix
def test_kstatus_of_live_resources(
    api_client: client.ApiClient, namespace: str, kubectl: Kubectl, kstatus_helper: None
) -> None:
    ns = namespace
    create(api_client, PROJECTS, ns, project_body("good", [inline_source({"README.md": "# good\n"})]))
    create(api_client, PROJECTS, ns, project_body("bad", [bad_template(api_client, ns)]))
    create(api_client, PROJECTS, ns, project_body("waiting", [{"configMap": {"name": "not-there-yet"}}]))
    create(api_client, EXPORTS, ns, export_body("orphan", "no-such-project", "zip"))
    create(api_client, EXPORTS, ns, export_body("good-zip", "good", "zip"))

    good = wait_phase(api_client, PROJECTS, ns, "good", "Completed", "Failed")
    assert good["status"]["phase"] == "Completed", good["status"]
    bad = wait_phase(api_client, PROJECTS, ns, "bad", "Completed", "Failed")
    assert bad["status"]["phase"] == "Failed", bad["status"]
    assert "_tasks (touch /tmp/pwned) and tasks is Fail" in bad["status"]["errorMessage"]
    pending = wait_for(api_client, PROJECTS, ns, "waiting", waiting, what="waiting for its ConfigMap")
    orphan = wait_for(api_client, EXPORTS, ns, "orphan", waiting, what="waiting for its project")
    good_zip = wait_phase(api_client, EXPORTS, ns, "good-zip", "Completed", "Failed")
    assert good_zip["status"]["phase"] == "Completed", good_zip["status"]

    objs = [good, bad, pending, orphan, good_zip]
    results = kstatus.results(objs)
    assert [r.status for r in results] == ["Current", "Failed", "InProgress", "InProgress", "Current"], (
        results
    )
    assert "tasks is Fail" in results[1].message
    assert "not-there-yet" in results[2].message
    assert "no-such-project" in results[3].message

    # The items of `kubectl get -o json`, as a GitOps tool reads them.
    listed = json.loads(kubectl("get", "-n", ns, "generatedprojects", "-o", "json").stdout)["items"]
    statuses = dict(zip([o["metadata"]["name"] for o in listed], kstatus.compute(listed), strict=True))
    assert statuses == {"bad": "Failed", "good": "Current", "waiting": "InProgress"}


@pytest.mark.matrix
def test_kstatus_follows_a_spec_change(
    api_client: client.ApiClient, namespace: str, kstatus_helper: None
) -> None:
    """A status written for an older generation is InProgress, then Current again once reconciled."""
    create(api_client, PROJECTS, namespace, project_body("p", [inline_source({"a.txt": "1\n"})]))
    wait_phase(api_client, PROJECTS, namespace, "p", "Completed")
    stale = client.CustomObjectsApi(api_client).patch_namespaced_custom_object(
        "projectgen.io",
        "v1alpha1",
        namespace,
        PROJECTS,
        "p",
        {"spec": {"sources": [inline_source({"a.txt": "2\n"})]}},
    )
    # the answer to our patch: the spec is new, the status still the old generation's
    assert (stale["metadata"]["generation"], stale["status"]["observedGeneration"]) == (2, 1)
    assert kstatus.compute([stale]) == ["InProgress"]
    fresh = wait_phase(api_client, PROJECTS, namespace, "p", "Completed")
    assert fresh["metadata"]["generation"] == 2
    assert kstatus.compute([fresh]) == ["Current"]


def test_kubectl_wait(api_client: client.ApiClient, namespace: str, kubectl: Kubectl) -> None:
    ns = namespace
    create(api_client, PROJECTS, ns, project_body("good", [inline_source({"README.md": "# good\n"})]))
    create(api_client, PROJECTS, ns, project_body("bad", [bad_template(api_client, ns)]))

    code, took = kubectl_wait(kubectl, ns, "generatedproject/good", "Ready", 60)
    assert code == 0, (
        f"kubectl wait --for=condition=Ready failed after {took:.1f}s: {get(api_client, PROJECTS, ns, 'good')}"
    )

    # a pipeline waiting for Stalled hears of the failure as it happens...
    code, took = kubectl_wait(kubectl, ns, "generatedproject/bad", "Stalled", 60)
    assert code == 0 and took < 30, f"kubectl wait --for=condition=Stalled: exit {code} after {took:.1f}s"
    bad = get(api_client, PROJECTS, ns, "bad")
    assert bad is not None and bad["status"]["phase"] == "Failed"
    # ... asking again returns at once ...
    code, took = kubectl_wait(kubectl, ns, "gp/bad", "Stalled", 30)
    assert code == 0 and took < 10, f"kubectl wait --for=condition=Stalled: exit {code} after {took:.1f}s"
    # ... and waiting for Ready on the failed one times out instead of succeeding
    code, _ = kubectl_wait(kubectl, ns, "generatedproject/bad", "Ready", 2)
    assert code != 0
