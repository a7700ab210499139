"""The local control plane itself: version, RBAC, restarts, CRD installation."""

from __future__ import annotations

import json
import secrets
import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path

import kubernetes.client
import pytest
import urllib3
from kubernetes.client.exceptions import ApiException

from projectgen_dev.controlplane import K8S_VERSION, ControlPlane
from projectgen_dev.netns import NetworkNamespace

Kubectl = Callable[..., subprocess.CompletedProcess[str]]


@pytest.mark.matrix  # the matrix really runs the version it names
def test_server_version(api_client: kubernetes.client.ApiClient) -> None:
    info = kubernetes.client.VersionApi(api_client).get_code()
    assert (info.major, info.minor) == ("1", K8S_VERSION.split(".")[1])
    assert info.git_version == K8S_VERSION


def test_kubectl_uses_kubeconfig_with_ca(
    control_plane: ControlPlane, kubectl: Kubectl, namespace: str
) -> None:
    assert control_plane.ca_file is not None  # TLS is verified, not skipped
    assert kubectl("get", "namespace", namespace, "-o", "name").stdout.strip() == f"namespace/{namespace}"
    assert kubectl("auth", "can-i", "*", "*").stdout.strip() == "yes"


def test_unknown_token_is_unauthorized(control_plane: ControlPlane) -> None:
    with (
        control_plane.api_client(token="not-a-valid-token") as client,
        pytest.raises(ApiException) as excinfo,
    ):
        kubernetes.client.CoreV1Api(client).list_namespace()
    assert excinfo.value.status == 401


def test_service_account_without_role_is_forbidden(
    control_plane: ControlPlane, api_client: kubernetes.client.ApiClient, namespace: str
) -> None:
    core = kubernetes.client.CoreV1Api(api_client)
    core.create_namespaced_service_account(
        namespace, kubernetes.client.V1ServiceAccount(metadata=kubernetes.client.V1ObjectMeta(name="nobody"))
    )
    request = kubernetes.client.AuthenticationV1TokenRequest(
        spec=kubernetes.client.V1TokenRequestSpec(audiences=[], expiration_seconds=600)
    )
    token = core.create_namespaced_service_account_token("nobody", namespace, request).status.token

    with control_plane.api_client(token=token) as client, pytest.raises(ApiException) as excinfo:
        kubernetes.client.CoreV1Api(client).list_namespaced_secret(namespace)
    assert excinfo.value.status == 403
    assert f"system:serviceaccount:{namespace}:nobody" in str(excinfo.value.body)


def test_install_crds_create_then_replace(
    control_plane: ControlPlane, api_client: kubernetes.client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    group = f"t{secrets.token_hex(4)}.projectgen.test"
    crd = textwrap.dedent(
        f"""\
        apiVersion: apiextensions.k8s.io/v1
        kind: CustomResourceDefinition
        metadata:
          name: widgets.{group}
        spec:
          group: {group}
          scope: Namespaced
          names: {{plural: widgets, singular: widget, kind: Widget}}
          versions:
            - name: v1
              served: true
              storage: true
              subresources: {{status: {{}}}}
              schema:
                openAPIV3Schema:
                  type: object
                  properties:
                    spec:
                      type: object
                      properties:
                        size: {{type: integer, default: 3}}
                        extra: {{type: object, x-kubernetes-preserve-unknown-fields: true}}
        """
    )
    (tmp_path / "widgets.yaml").write_text(crd)
    assert control_plane.install_crds(tmp_path) == [f"widgets.{group}"]
    assert control_plane.install_crds(tmp_path) == [f"widgets.{group}"]  # replace path

    custom = kubernetes.client.CustomObjectsApi(api_client)
    body = {
        "apiVersion": f"{group}/v1",
        "kind": "Widget",
        "metadata": {"name": "w"},
        "spec": {"extra": {"a": 1}},
    }
    custom.create_namespaced_custom_object(group, "v1", namespace, "widgets", body)
    created = custom.get_namespaced_custom_object(group, "v1", namespace, "widgets", "w")
    assert created["spec"] == {"size": 3, "extra": {"a": 1}}  # schema default and preserved fields


def test_apiserver_restart_keeps_data(
    control_plane: ControlPlane, api_client: kubernetes.client.ApiClient, namespace: str
) -> None:
    core = kubernetes.client.CoreV1Api(api_client)
    core.create_namespaced_config_map(
        namespace,
        kubernetes.client.V1ConfigMap(
            metadata=kubernetes.client.V1ObjectMeta(name="survivor"), data={"k": "v"}
        ),
    )
    url = control_plane.url

    control_plane.stop_apiserver()
    assert not control_plane.apiserver_running
    with pytest.raises(urllib3.exceptions.MaxRetryError):  # connection refused
        core.read_namespaced_config_map("survivor", namespace, _request_timeout=2)
    control_plane.start_apiserver()

    assert control_plane.url == url
    assert core.read_namespaced_config_map("survivor", namespace).data == {"k": "v"}


def test_control_plane_in_a_network_namespace_with_users_and_aggregation(
    network_namespace: NetworkNamespace,
) -> None:
    """The harness the aggregated API and webhook tests stand on: a real address, client-certificate
    users, the front proxy's CA published, MutatingAdmissionPolicy switchable off."""
    with ControlPlane(netns=network_namespace, admission_policy=False) as cp:
        assert cp.url.startswith(f"https://{network_namespace.address}:")
        kubeconfig = cp.user_kubeconfig("alice", ["team-a-devs"])
        whoami = subprocess.run(
            [
                "kubectl",
                "--kubeconfig",
                str(kubeconfig),
                "auth",
                "whoami",
                "-o",
                "jsonpath={.status.userInfo}",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert '"username":"alice"' in whoami and "team-a-devs" in whoami
        with kubernetes.client.ApiClient(cp.user_configuration("bob")) as client:
            with pytest.raises(ApiException) as excinfo:
                kubernetes.client.CoreV1Api(client).list_namespace()
            assert excinfo.value.status == 403
            assert json.loads(excinfo.value.body)["message"].startswith('namespaces is forbidden: User "bob"')
        with cp.api_client() as client:
            auth = kubernetes.client.CoreV1Api(client).read_namespaced_config_map(
                "extension-apiserver-authentication", "kube-system"
            )
            assert auth.data["requestheader-allowed-names"] == '["front-proxy-client"]'
            assert auth.data["requestheader-client-ca-file"].strip() == cp.front_proxy_ca_pem.decode().strip()
        served = subprocess.run(
            ["kubectl", f"--kubeconfig={cp.kubeconfig}", "api-resources", "-o", "name"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert "validatingadmissionpolicies.admissionregistration.k8s.io" in served
        assert not [r for r in served if r.startswith("mutatingadmissionpolic")], served
