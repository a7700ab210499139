"""The questions users ask of their generations, answered by the API server itself.

`selectableFields` on both CRDs and the `projectgen.io/project` label turn "every generation of
project billing", "every failed export", "everything alice created" (projects and exports) and "all
GitHub exports" into
`kubectl get --field-selector` / `-l` queries, served by the kube-apiserver (no operator involved).
"""

from __future__ import annotations

import json
import secrets
from typing import TYPE_CHECKING

import pytest
from kubernetes import client
from support import EXPORTS, GROUP, PROJECTS, VERSION, create, inline_source, project_body, wait_phase

if TYPE_CHECKING:
    from conftest import Kubectl

pytestmark = [pytest.mark.usefixtures("operator"), pytest.mark.matrix]


def _failing_source() -> dict[str, object]:
    return {"configMap": {"name": "absent-key", "items": [{"key": "missing", "path": "x"}]}}


def _export(name: str, project: str, export_type: str) -> dict[str, object]:
    spec: dict[str, object] = {"generatedProjectRef": {"name": project}, "exportType": export_type}
    if export_type == "github":
        spec["repositoryName"] = name
        spec["config"] = {"credentialsSecretRef": {"name": "no-such-secret", "key": "token"}}
    return {"kind": "RepositoryExport", "metadata": {"name": name}, "spec": spec}


def _apply_as(kubectl: Kubectl, user: str, namespace: str, body: dict[str, object]) -> None:
    body = {"apiVersion": f"{GROUP}/{VERSION}", **body}
    kubectl("create", f"--as={user}", "-n", namespace, "-f", "-", input=json.dumps(body))


@pytest.fixture(scope="module")
def generations(api_client: client.ApiClient, kubectl: Kubectl, operator: object) -> str:
    """Two projects (billing, web), each generated twice, one generation of each failed; alice
    created two of them; zip, tar and GitHub exports, some of failed generations, alice created two
    of those. One namespace for the module: the tests only read."""
    namespace = f"selectors-{secrets.token_hex(3)}"
    client.CoreV1Api(api_client).create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace))
    )
    client.CoreV1Api(api_client).create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="absent-key"), data={"a": "x"})
    )
    kubectl("create", "role", "creator", "-n", namespace, "--verb=create,get,list",
            "--resource=generatedprojects.projectgen.io,repositoryexports.projectgen.io")  # fmt: skip
    kubectl("create", "rolebinding", "alice", "-n", namespace, "--role=creator", "--user=alice")
    ok = inline_source({"README.md": "hello\n"})
    create(api_client, PROJECTS, namespace, project_body("billing-1", [ok], project="billing"))
    _apply_as(kubectl, "alice", namespace, project_body("billing-2", [_failing_source()], project="billing"))
    _apply_as(kubectl, "alice", namespace, project_body("web-1", [ok], project="web"))
    create(api_client, PROJECTS, namespace, project_body("web-2", [_failing_source()], project="web"))
    create(api_client, EXPORTS, namespace, _export("billing-1-zip", "billing-1", "zip"))
    _apply_as(kubectl, "alice", namespace, _export("billing-2-zip", "billing-2", "zip"))
    create(api_client, EXPORTS, namespace, _export("billing-2-gh", "billing-2", "github"))
    _apply_as(kubectl, "alice", namespace, _export("web-1-tar", "web-1", "tar"))
    create(api_client, EXPORTS, namespace, _export("web-2-gh", "web-2", "github"))
    for name in ("billing-1", "web-1"):
        wait_phase(api_client, PROJECTS, namespace, name, "Completed")
    for name in ("billing-2", "web-2"):
        wait_phase(api_client, PROJECTS, namespace, name, "Failed")
    for name in ("billing-1-zip", "web-1-tar"):
        wait_phase(api_client, EXPORTS, namespace, name, "Completed")
    for name in ("billing-2-zip", "billing-2-gh", "web-2-gh"):
        wait_phase(api_client, EXPORTS, namespace, name, "Failed")
    return namespace


def _names(
    api: client.ApiClient, plural: str, namespace: str, *, fields: str = "", labels: str = ""
) -> set[str]:
    listed = client.CustomObjectsApi(api).list_namespaced_custom_object(
        GROUP, VERSION, namespace, plural, field_selector=fields or None, label_selector=labels or None
    )
    return {item["metadata"]["name"] for item in listed["items"]}


def _kubectl_names(kubectl: Kubectl, kind: str, namespace: str, *selector: str) -> set[str]:
    out = kubectl("get", kind, "-n", namespace, *selector, "-o", "name").stdout
    return {line.rsplit("/", 1)[-1] for line in out.split()}


def test_every_generation_of_a_project(
    api_client: client.ApiClient, kubectl: Kubectl, generations: str
) -> None:
    ns = generations
    assert _names(api_client, PROJECTS, ns, fields="spec.projectRef.name=billing") == {
        "billing-1",
        "billing-2",
    }
    assert _names(api_client, PROJECTS, ns, labels="projectgen.io/project=billing") == {
        "billing-1",
        "billing-2",
    }
    assert _kubectl_names(kubectl, "gp", ns, "--field-selector", "spec.projectRef.name=web") == {
        "web-1",
        "web-2",
    }
    assert _kubectl_names(kubectl, "gp", ns, "-l", "projectgen.io/project=web") == {"web-1", "web-2"}
    failed = "spec.projectRef.name=billing,status.phase=Failed"
    assert _kubectl_names(kubectl, "gp", ns, "--field-selector", failed) == {"billing-2"}
    assert _names(api_client, PROJECTS, ns, fields="spec.projectRef.name!=billing") == {"web-1", "web-2"}


def test_every_failed_export(api_client: client.ApiClient, kubectl: Kubectl, generations: str) -> None:
    ns = generations
    failed = {"billing-2-zip", "billing-2-gh", "web-2-gh"}
    assert _names(api_client, EXPORTS, ns, fields="status.phase=Failed") == failed
    assert _kubectl_names(kubectl, "rexp", ns, "--field-selector", "status.phase=Failed") == failed
    assert _names(api_client, EXPORTS, ns, fields="status.phase=Completed") == {"billing-1-zip", "web-1-tar"}
    of_billing_2 = {"billing-2-zip", "billing-2-gh"}
    assert _names(api_client, EXPORTS, ns, fields="spec.generatedProjectRef.name=billing-2") == of_billing_2
    assert _names(api_client, EXPORTS, ns, labels="projectgen.io/generated-project=billing-2") == of_billing_2


@pytest.mark.created_by_policy
@pytest.mark.parametrize(
    ("plural", "kind", "created", "failed"),
    [
        (PROJECTS, "gp", {"billing-2", "web-1"}, {"billing-2"}),
        (EXPORTS, "rexp", {"billing-2-zip", "web-1-tar"}, {"billing-2-zip"}),
    ],
)
def test_everything_alice_created(
    api_client: client.ApiClient,
    kubectl: Kubectl,
    generations: str,
    plural: str,
    kind: str,
    created: set[str],
    failed: set[str],
) -> None:
    ns = generations
    assert _names(api_client, plural, ns, fields="status.createdBy=alice") == created
    assert _kubectl_names(kubectl, kind, ns, "--field-selector", "status.createdBy=alice") == created
    assert _names(api_client, plural, ns, fields="status.createdBy=alice,status.phase=Failed") == failed


@pytest.mark.created_by_policy
def test_wide_output_says_who_created_an_export(kubectl: Kubectl, generations: str) -> None:
    lines = kubectl("get", "rexp", "-n", generations, "-o", "wide").stdout.splitlines()
    at = lines[0].index(" CREATOR ") + 1  # columns are aligned; earlier cells may hold spaces
    creators = {row.split()[0]: row[at:].split()[0] for row in lines[1:]}
    assert creators["web-1-tar"] == "alice" and creators["billing-1-zip"] == "projectgen-admin"


def test_all_github_exports(api_client: client.ApiClient, kubectl: Kubectl, generations: str) -> None:
    ns = generations
    assert _names(api_client, EXPORTS, ns, fields="spec.exportType=github") == {"billing-2-gh", "web-2-gh"}
    archives = _kubectl_names(kubectl, "rexp", ns, "--field-selector", "spec.exportType!=github")
    assert archives == {"billing-1-zip", "billing-2-zip", "web-1-tar"}


def test_fields_that_are_not_selectable_are_refused(kubectl: Kubectl, namespace: str) -> None:
    refused = kubectl("get", "gp", "-n", namespace, "--field-selector", "status.totalFiles=1", check=False)
    assert refused.returncode != 0
    assert "field label not supported" in refused.stderr
