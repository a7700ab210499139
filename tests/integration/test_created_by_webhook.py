"""createdBy on a cluster without MutatingAdmissionPolicy: the operator's own webhook stamps the user.

The control plane runs in a network namespace with MutatingAdmissionPolicy switched off (as on
most clusters today), and the operator inside it serves the webhook of
``manifests/created-by/webhook/`` on the namespace's address, reached through a Service and an
EndpointSlice the test makes (no controller-manager runs). The operator creates its serving CA and
fills in the configuration's caBundle itself; kube-apiserver verifies the certificate against it.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest
from kubernetes.client.exceptions import ApiException
from support import (
    CREATED_BY_KINDS,
    OperatorProcess,
    create_annotated,
    expose,
    free_port,
    wait_phase,
)

from projectgen_dev.controlplane import ControlPlane, wait_admissible
from projectgen_dev.netns import NetworkNamespace

REPO = Path(__file__).resolve().parents[2]
OPERATOR_NAMESPACE = "projectgen-system"
pytestmark = [pytest.mark.timeout(300), pytest.mark.matrix]


@pytest.fixture(scope="module")
def cluster(network_namespace: NetworkNamespace) -> Iterator[ControlPlane]:
    with ControlPlane(netns=network_namespace, admission_policy=False) as cp:
        cp.install(REPO / "crds")
        yield cp


@pytest.fixture(scope="module")
def webhook_operator(
    cluster: ControlPlane, network_namespace: NetworkNamespace, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    port = free_port()
    with cluster.api_client() as api:
        core = kubernetes.client.CoreV1Api(api)
        core.create_namespace(
            kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name=OPERATOR_NAMESPACE))
        )
        expose(api, OPERATOR_NAMESPACE, "projectgen-api", network_namespace.address, port)
        subprocess.run(
            [
                "kubectl",
                "--kubeconfig",
                str(cluster.kubeconfig),
                "apply",
                "-k",
                str(REPO / "manifests/created-by/webhook"),
            ],
            check=True,
            capture_output=True,
        )
        work = tmp_path_factory.mktemp("webhook-operator")
        operator = OperatorProcess(
            cluster.kubeconfig,
            work / "data",
            work / "operator.log",
            netns=network_namespace,
            env={"PROJECTGEN_SERVING_PORT": str(port), "PROJECTGEN_OPERATOR_NAMESPACE": OPERATOR_NAMESPACE},
        )
        with operator:
            wait_admissible(api, created_by=True, timeout=90)
            yield operator


def namespace_for(cluster: ControlPlane, user: str) -> str:
    """A fresh namespace where ``user`` may create GeneratedProjects and RepositoryExports (and read them)."""
    name = f"wh-{user}-{secrets.token_hex(3)}"
    with cluster.api_client() as api:
        kubernetes.client.CoreV1Api(api).create_namespace(
            kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name=name))
        )
        rbac = kubernetes.client.RbacAuthorizationV1Api(api)
        rbac.create_namespaced_role(
            name,
            {
                "metadata": {"name": "projects"},
                "rules": [
                    {
                        "apiGroups": ["projectgen.io"],
                        "resources": ["generatedprojects", "repositoryexports"],
                        "verbs": ["get", "list", "create", "patch", "update"],
                    }
                ],
            },
        )
        rbac.create_namespaced_role_binding(
            name,
            {
                "metadata": {"name": user},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "projects"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
            },
        )
    return name


@pytest.mark.parametrize("plural", CREATED_BY_KINDS)
def test_the_webhook_stamps_the_requesting_user_over_a_forged_one(
    cluster: ControlPlane, webhook_operator: OperatorProcess, plural: str
) -> None:
    namespace = namespace_for(cluster, "alice")
    forged = {"projectgen.io/created-by": "mallory", "team": "billing"}
    with kubernetes.client.ApiClient(cluster.user_configuration("alice")) as alice:
        made = create_annotated(alice, plural, namespace, "forged", forged)
        assert made["metadata"]["annotations"] == {"projectgen.io/created-by": "alice", "team": "billing"}
    with cluster.api_client() as admin:
        done = wait_phase(admin, plural, namespace, "forged", "Completed")
        assert done["status"]["createdBy"] == "alice"


@pytest.mark.parametrize("plural", CREATED_BY_KINDS)
def test_a_change_is_refused(cluster: ControlPlane, webhook_operator: OperatorProcess, plural: str) -> None:
    namespace = namespace_for(cluster, "carol")
    with kubernetes.client.ApiClient(cluster.user_configuration("carol")) as carol:
        create_annotated(carol, plural, namespace, "mine", {})
        custom = kubernetes.client.CustomObjectsApi(carol)
        with pytest.raises(ApiException) as excinfo:
            custom.patch_namespaced_custom_object(
                "projectgen.io",
                "v1alpha1",
                namespace,
                plural,
                "mine",
                {"metadata": {"annotations": {"projectgen.io/created-by": "eve"}}},
            )
        assert excinfo.value.status in (403, 422)
        assert "cannot be changed" in json.loads(excinfo.value.body)["message"]


def test_the_api_server_trusts_only_the_operators_ca(
    cluster: ControlPlane, webhook_operator: OperatorProcess
) -> None:
    """The caBundle the operator wrote is its serving CA: the API server verified the webhook with it."""
    with cluster.api_client() as api:
        config: Any = kubernetes.client.AdmissionregistrationV1Api(api).read_mutating_webhook_configuration(
            "projectgen-created-by"
        )
        bundle = config.webhooks[0].client_config.ca_bundle
        secret = kubernetes.client.CoreV1Api(api).list_namespaced_secret(OPERATOR_NAMESPACE)
    assert bundle, "the operator did not fill in the caBundle"
    assert any((s.data or {}).get("ca.crt") == bundle for s in secret.items)
