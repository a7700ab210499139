"""The install manifests against a real API server, and the operator running as its ServiceAccount.

- every object of `kubectl kustomize manifests/`, and every sample, is accepted by the API server;
- the operator, authenticated with a TokenRequest token of the `projectgen` ServiceAccount bound
  only to the manifests' ClusterRole, goes through a whole cycle (ConfigMap + inline project, zip
  export, GitHub export) without a single 403;
- SubjectAccessReviews show the role grants nothing more than that.
"""

from __future__ import annotations

import base64
import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from support import (
    EXPORTS,
    PROJECTS,
    OperatorProcess,
    condition,
    create,
    ensure_namespace,
    export_body,
    free_port,
    inline_source,
    permission_problems,
    project_body,
    wait_event,
    wait_for,
    wait_phase,
)

from projectgen_dev.controlplane import ControlPlane
from projectgen_dev.fakehosts import FakeGitHub

if TYPE_CHECKING:
    from conftest import Kubectl

REPO_ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = REPO_ROOT / "manifests"
SAMPLES = MANIFESTS / "samples"
SYSTEM_NAMESPACE = "projectgen-system"
SERVICE_ACCOUNT = "projectgen"
USER = f"system:serviceaccount:{SYSTEM_NAMESPACE}:{SERVICE_ACCOUNT}"
GROUPS = ["system:serviceaccounts", f"system:serviceaccounts:{SYSTEM_NAMESPACE}", "system:authenticated"]
RBAC_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
APISERVICE = "v1alpha1.download.projectgen.io"
CA_SECRET = "projectgen-serving-ca"
TOKEN = "ghp_RbacTestS3cret0123456789abcdef"


def kustomize() -> list[dict[str, Any]]:
    out = subprocess.run(
        ["kubectl", "kustomize", str(MANIFESTS)], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.fixture(scope="module")
def installed_rbac(api_client: client.ApiClient, kubectl: Kubectl) -> list[dict[str, Any]]:
    """The ServiceAccount, ClusterRole and ClusterRoleBinding of the manifests, applied for real."""
    ensure_namespace(api_client, SYSTEM_NAMESPACE)
    docs = [d for d in kustomize() if d["kind"] in RBAC_KINDS]
    assert {d["kind"] for d in docs} == set(RBAC_KINDS)
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    return docs


def service_account_kubeconfig(control_plane: ControlPlane, api: client.ApiClient, path: Path) -> Path:
    """A kubeconfig authenticating as the ServiceAccount with a TokenRequest token."""
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
    )
    answer = client.CoreV1Api(api).create_namespaced_service_account_token(
        SERVICE_ACCOUNT, SYSTEM_NAMESPACE, request
    )
    token = answer.status.token
    assert token
    cluster: dict[str, Any] = {"server": control_plane.url}
    if control_plane.ca_file is not None:
        cluster["certificate-authority"] = str(control_plane.ca_file)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": cluster}],
        "users": [{"name": SERVICE_ACCOUNT, "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "local", "user": SERVICE_ACCOUNT}}],
        "current-context": "operator",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


# --- the manifests are valid ------------------------------------------------------------------


def test_every_manifest_is_accepted_by_the_api_server(api_client: client.ApiClient, kubectl: Kubectl) -> None:
    docs = kustomize()
    kinds = sorted({d["kind"] for d in docs})
    assert kinds == sorted(
        {
            "Namespace",
            "CustomResourceDefinition",
            *RBAC_KINDS,
            "PersistentVolumeClaim",
            "ConfigMap",
            "Deployment",
            "Service",
            "APIService",
        }
    )
    ensure_namespace(api_client, SYSTEM_NAMESPACE)  # dry-run objects in it need it to exist
    proc = kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(docs))
    applied = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(applied) == len(docs), proc.stdout
    assert all("(server dry run)" in line for line in applied), proc.stdout


def test_every_sample_is_accepted_by_the_api_server(kubectl: Kubectl, namespace: str) -> None:
    files = sorted(SAMPLES.glob("*.yaml"))
    names = {p.name for p in files}
    assert {
        "generatedproject.yaml",
        "export-zip.yaml",
        "export-tar.yaml",
        "export-targz.yaml",
        "export-github.yaml",
        "export-gitlab.yaml",
    } <= names
    docs = [d for p in files for d in yaml.safe_load_all(p.read_text()) if d]
    proc = kubectl("apply", "--dry-run=server", "-n", namespace, "-f", str(SAMPLES))
    applied = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(applied) == len(docs), proc.stdout
    assert all("(server dry run)" in line for line in applied), proc.stdout


# --- the operator as its ServiceAccount -------------------------------------------------------


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    with FakeGitHub(tokens={TOKEN}, user="octocat", orgs=["acme"]) as fake:
        yield fake


def test_operator_runs_a_full_cycle_as_its_service_account(
    control_plane: ControlPlane,
    api_client: client.ApiClient,
    installed_rbac: list[dict[str, Any]],
    solo_namespace: str,
    github: FakeGitHub,
    tmp_path: Path,
) -> None:
    ns = solo_namespace
    kubeconfig = service_account_kubeconfig(control_plane, api_client, tmp_path / "kubeconfig")
    core = client.CoreV1Api(api_client)
    core.create_namespaced_config_map(
        ns,
        client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="files"),
            data={"main": "print('billing')\n"},
            binary_data={"logo": base64.b64encode(b"\x89PNG\r\n").decode()},
        ),
    )
    core.create_namespaced_secret(
        ns, client.V1Secret(metadata=client.V1ObjectMeta(name="git-token"), string_data={"token": TOKEN})
    )
    # The download API's server too: its CA Secret, the requestheader ConfigMap, its APIService's caBundle.
    apiservice = next(d for d in kustomize() if d["kind"] == "APIService")
    custom_api = client.CustomObjectsApi(api_client)
    with contextlib.suppress(ApiException):
        core.delete_namespaced_secret(CA_SECRET, SYSTEM_NAMESPACE)
    custom_api.create_cluster_custom_object("apiregistration.k8s.io", "v1", "apiservices", apiservice)
    operator = OperatorProcess(
        kubeconfig,
        tmp_path / "data",
        tmp_path / "operator.log",
        namespaces=(ns,),
        env={"PROJECTGEN_SERVING_PORT": str(free_port()), "PROJECTGEN_OPERATOR_NAMESPACE": SYSTEM_NAMESPACE},
    )
    try:
        _full_cycle(operator, api_client, ns, github)
        served = custom_api.get_cluster_custom_object(
            "apiregistration.k8s.io", "v1", "apiservices", APISERVICE
        )
    finally:
        # An APIService without endpoints makes every discovery warn: not left for the other tests.
        custom_api.delete_cluster_custom_object("apiregistration.k8s.io", "v1", "apiservices", APISERVICE)
    secret = core.read_namespaced_secret(CA_SECRET, SYSTEM_NAMESPACE)
    assert served["spec"]["caBundle"] == secret.data["ca.crt"]
    log = operator.logs()
    assert "download API served" in log and f"set the caBundle of apiservices/{APISERVICE}" in log
    denied = permission_problems(log)
    assert not denied, "the operator hit missing permissions:\n" + "\n".join(denied[:20])
    assert TOKEN not in log
    assert "PRIVATE KEY" not in log
    # kopf's events were posted (core/v1 events: create)
    wait_event(api_client, ns, "billing", lambda e: e.reason == "Completed")


def _full_cycle(operator: OperatorProcess, api_client: client.ApiClient, ns: str, github: FakeGitHub) -> None:
    with operator:
        sources = [
            inline_source({"README.md": "# Billing\n", "run.sh": "#!/bin/sh\n"}, executable=("run.sh",)),
            {"configMap": {"name": "files", "items": [{"key": "main", "path": "src/billing/main.py"}]}},
            {"configMap": {"name": "files", "items": [{"key": "logo", "path": "assets/logo.png"}]}},
        ]
        create(api_client, PROJECTS, ns, project_body("billing", sources))
        project = wait_phase(api_client, PROJECTS, ns, "billing", "Completed", "Failed", timeout=90)
        assert project["status"]["phase"] == "Completed", project["status"]
        assert sorted(f["path"] for f in project["status"]["files"]) == [
            "README.md",
            "assets/logo.png",
            "run.sh",
            "src/billing/main.py",
        ]

        create(api_client, EXPORTS, ns, export_body("zip", "billing", "zip"))
        zipped = wait_phase(api_client, EXPORTS, ns, "zip", "Completed", "Failed", timeout=90)
        assert zipped["status"]["phase"] == "Completed", zipped["status"]
        assert Path(zipped["status"]["archivePath"]).is_file()
        # the ownerReference and label, patched by the operator (kopf applies them after the handler)
        owned = wait_for(api_client, EXPORTS, ns, "zip", lambda o: bool(o["metadata"].get("ownerReferences")))
        assert [r["name"] for r in owned["metadata"]["ownerReferences"]] == ["billing"]

        config = {"apiUrl": github.api_url, "owner": "acme", "credentialsSecretRef": {"name": "git-token"}}
        create(
            api_client,
            EXPORTS,
            ns,
            export_body("gh", "billing", "github", repositoryName="billing-api", config=config),
        )
        published = wait_phase(api_client, EXPORTS, ns, "gh", "Completed", "Failed", timeout=120)
        assert published["status"]["phase"] == "Completed", published["status"]
        assert github.created == ["acme/billing-api"]
        assert condition(published, "Ready")["status"] == "True"
        deadline = time.monotonic() + 30  # the server starts beside kopf, asynchronously
        while "set the caBundle" not in operator.logs() and time.monotonic() < deadline:
            time.sleep(0.2)


# --- the role is no wider than that -----------------------------------------------------------


def allowed(
    api: client.ApiClient,
    verb: str,
    resource: str,
    group: str = "",
    subresource: str | None = None,
    namespace: str | None = "team-a",
    name: str | None = None,
) -> bool:
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=USER,
            groups=GROUPS,
            resource_attributes=client.V1ResourceAttributes(
                namespace=namespace,
                verb=verb,
                group=group,
                resource=resource,
                subresource=subresource,
                name=name,
            ),
        )
    )
    answer = client.AuthorizationV1Api(api).create_subject_access_review(review)
    return bool(answer.status.allowed)


GP, RE, PG = "generatedprojects", "repositoryexports", "projectgen.io"

ALLOWED: list[tuple[str, str, str, str | None]] = [
    # (verb, resource, group, subresource)
    ("get", "secrets", "", None),
    ("get", "configmaps", "", None),
    ("get", GP, PG, None),
    ("list", GP, PG, None),
    ("watch", GP, PG, None),
    ("patch", GP, PG, None),
    ("list", RE, PG, None),
    ("watch", RE, PG, None),
    ("patch", RE, PG, None),
    ("patch", GP, PG, "status"),
    ("patch", RE, PG, "status"),
    ("create", "events", "", None),
]

DENIED_ACCESS: list[tuple[str, str, str, str | None]] = [
    ("list", "secrets", "", None),
    ("watch", "secrets", "", None),
    ("create", "secrets", "", None),
    ("update", "secrets", "", None),
    ("list", "configmaps", "", None),
    ("watch", "configmaps", "", None),
    ("create", "configmaps", "", None),
    ("update", GP, PG, None),
    ("update", RE, PG, None),
    ("create", GP, PG, None),
    ("create", RE, PG, None),
    ("delete", GP, PG, None),
    ("delete", RE, PG, None),
    ("deletecollection", GP, PG, None),
    ("update", GP, PG, "status"),
    ("update", RE, PG, "status"),
    ("get", RE, PG, None),
    ("create", "pods", "", None),
    ("create", "pods", "", "exec"),
    ("create", "deployments", "apps", None),
    ("create", "roles", "rbac.authorization.k8s.io", None),
    ("create", "rolebindings", "rbac.authorization.k8s.io", None),
    ("create", "clusterroles", "rbac.authorization.k8s.io", None),
    ("bind", "clusterroles", "rbac.authorization.k8s.io", None),
    ("escalate", "clusterroles", "rbac.authorization.k8s.io", None),
    ("create", "serviceaccounts", "", "token"),
    ("update", "events", "", None),
    ("create", "leases", "coordination.k8s.io", None),
    ("create", "customresourcedefinitions", "apiextensions.k8s.io", None),
    ("update", "customresourcedefinitions", "apiextensions.k8s.io", None),
]


AUTH = "authorization.k8s.io"
REG = "apiregistration.k8s.io"
ADM = "admissionregistration.k8s.io"
WEBHOOK = "projectgen-created-by"
# (verb, resource, group, subresource, namespace, name): the download API's additions, nothing more.
SERVING_ALLOWED: list[tuple[str, str, str, str | None, str | None, str | None]] = [
    ("create", "subjectaccessreviews", AUTH, None, None, None),  # system:auth-delegator
    ("create", "tokenreviews", "authentication.k8s.io", None, None, None),  # (the same built-in role)
    ("get", "configmaps", "", None, "kube-system", "extension-apiserver-authentication"),
    ("get", "apiservices", REG, None, None, APISERVICE),
    ("patch", "apiservices", REG, None, None, APISERVICE),
    ("get", "mutatingwebhookconfigurations", ADM, None, None, WEBHOOK),  # the createdBy webhook's caBundle
    ("patch", "mutatingwebhookconfigurations", ADM, None, None, WEBHOOK),
    ("create", "secrets", "", None, SYSTEM_NAMESPACE, None),
    ("get", "secrets", "", None, SYSTEM_NAMESPACE, CA_SECRET),
]
SERVING_DENIED: list[tuple[str, str, str, str | None, str | None, str | None]] = [
    ("patch", "apiservices", REG, None, None, "v1beta1.metrics.k8s.io"),
    ("update", "apiservices", REG, None, None, APISERVICE),
    ("delete", "apiservices", REG, None, None, APISERVICE),
    ("create", "apiservices", REG, None, None, None),
    ("list", "apiservices", REG, None, None, None),
    ("update", "secrets", "", None, SYSTEM_NAMESPACE, CA_SECRET),
    ("patch", "secrets", "", None, SYSTEM_NAMESPACE, CA_SECRET),
    ("delete", "secrets", "", None, SYSTEM_NAMESPACE, CA_SECRET),
    ("list", "secrets", "", None, SYSTEM_NAMESPACE, None),
    ("create", "secrets", "", None, "kube-system", None),
    ("update", "configmaps", "", None, "kube-system", "extension-apiserver-authentication"),
    ("create", "localsubjectaccessreviews", AUTH, None, "team-a", None),
    ("create", "mutatingwebhookconfigurations", ADM, None, None, None),
    ("list", "mutatingwebhookconfigurations", ADM, None, None, None),
    ("patch", "mutatingwebhookconfigurations", ADM, None, None, "someone-elses-webhook"),
    ("update", "mutatingwebhookconfigurations", ADM, None, None, WEBHOOK),
    ("delete", "mutatingwebhookconfigurations", ADM, None, None, WEBHOOK),
    ("patch", "validatingadmissionpolicies", ADM, None, None, "projectgen-created-by-immutable"),
    ("get", "repositoryexports", "download.projectgen.io", "archive", "team-a", "x"),  # downloads: users only
]


def test_serving_adds_only_delegation_its_apiservice_and_its_ca_secret(
    api_client: client.ApiClient, installed_rbac: list[dict[str, Any]]
) -> None:
    missing = [a for a in SERVING_ALLOWED if not allowed(api_client, a[0], a[1], a[2], a[3], a[4], a[5])]
    assert not missing, f"the operator may not: {missing}"
    wide = [d for d in SERVING_DENIED if allowed(api_client, d[0], d[1], d[2], d[3], d[4], d[5])]
    assert not wide, f"the operator may, but should not: {wide}"


def test_role_grants_what_the_operator_calls(
    api_client: client.ApiClient, installed_rbac: list[dict[str, Any]]
) -> None:
    missing = [a for a in ALLOWED if not allowed(api_client, a[0], a[1], a[2], a[3])]
    assert not missing, f"the operator may not: {missing}"
    for verb in ("list", "watch"):
        assert allowed(api_client, verb, "customresourcedefinitions", "apiextensions.k8s.io", namespace=None)
        assert allowed(api_client, verb, "namespaces", namespace=None)
        # cluster-wide (the Deployment's mode): kopf lists and watches across all namespaces
        assert allowed(api_client, verb, GP, PG, namespace=None)
        assert allowed(api_client, verb, RE, PG, namespace=None)
    assert allowed(api_client, "get", "namespaces", namespace=None)  # labels, for the outbound policy


def test_role_is_no_wider_than_needed(
    api_client: client.ApiClient, installed_rbac: list[dict[str, Any]]
) -> None:
    wide = [d for d in DENIED_ACCESS if allowed(api_client, d[0], d[1], d[2], d[3])]
    assert not wide, f"the operator may, but should not: {wide}"
    # cluster-scoped: cannot grant itself anything, nor touch namespaces
    assert not allowed(
        api_client, "create", "clusterrolebindings", "rbac.authorization.k8s.io", namespace=None
    )
    assert not allowed(api_client, "create", "namespaces", namespace=None)
    assert not allowed(api_client, "delete", "namespaces", namespace=None)


# --- the namespaced install ---------------------------------------------------------------------

NAMESPACED = MANIFESTS / "overlays" / "namespaced"
NAMESPACED_SA = f"{SERVICE_ACCOUNT}-namespaced"


def test_namespaced_install_cannot_read_a_secret_outside_its_namespaces(
    api_client: client.ApiClient, kubectl: Kubectl, namespace: str
) -> None:
    """The overlay's ServiceAccount, with a real token: a Secret in a served namespace is readable,
    one in any other namespace is not (403), and SubjectAccessReviews agree."""
    out = subprocess.run(
        ["kubectl", "kustomize", str(NAMESPACED)], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    rbac = [d for d in docs if d["kind"] in (*RBAC_KINDS, "RoleBinding")]
    served = [
        b["metadata"]["namespace"]
        for b in rbac
        if b["kind"] == "RoleBinding" and b["roleRef"]["kind"] == "ClusterRole"
    ]
    for name in (SYSTEM_NAMESPACE, *served):
        ensure_namespace(api_client, name)
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(rbac))
    core = client.CoreV1Api(api_client)
    for name in (served[0], namespace):
        try:
            core.create_namespaced_secret(
                name,
                client.V1Secret(metadata=client.V1ObjectMeta(name="probe"), string_data={"token": "x"}),
            )
        except ApiException as exc:
            if exc.status != 409:
                raise
    user = f"system:serviceaccount:{SYSTEM_NAMESPACE}:{NAMESPACED_SA}"

    def may(verb: str, resource: str, ns: str | None) -> bool:
        review = client.V1SubjectAccessReview(
            spec=client.V1SubjectAccessReviewSpec(
                user=user,
                groups=GROUPS,
                resource_attributes=client.V1ResourceAttributes(
                    namespace=ns, verb=verb, group="", resource=resource, name="probe"
                ),
            )
        )
        return bool(client.AuthorizationV1Api(api_client).create_subject_access_review(review).status.allowed)

    for ns in served:
        assert may("get", "secrets", ns) and may("get", "configmaps", ns)
    for ns in (namespace, SYSTEM_NAMESPACE, "default", "kube-system"):
        assert not may("get", "secrets", ns), ns
        assert not may("get", "configmaps", ns), ns
    assert not may("get", "secrets", None)  # nothing cluster-wide

    # Acting as the ServiceAccount: its own token, its own client.
    answer = core.create_namespaced_service_account_token(
        NAMESPACED_SA,
        SYSTEM_NAMESPACE,
        client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600)
        ),
    )
    config = client.Configuration()
    config.host = api_client.configuration.host
    config.ssl_ca_cert = api_client.configuration.ssl_ca_cert
    config.verify_ssl = api_client.configuration.verify_ssl
    config.api_key = {"authorization": f"Bearer {answer.status.token}"}
    with client.ApiClient(config) as as_sa:
        sa_core = client.CoreV1Api(as_sa)
        assert sa_core.read_namespaced_secret("probe", served[0]).data["token"]
        with pytest.raises(ApiException) as denied:
            sa_core.read_namespaced_secret("probe", namespace)
        assert denied.value.status == 403


def test_namespaced_install_serves_a_namespace_given_a_rolebinding(
    control_plane: ControlPlane,
    api_client: client.ApiClient,
    kubectl: Kubectl,
    solo_namespace: str,
    tmp_path: Path,
) -> None:
    """As an admin widens the overlay: one more RoleBinding, one more namespace in the list; the
    operator, with the overlay's ServiceAccount token, reads a ConfigMap there without a 403."""
    ns = solo_namespace
    out = subprocess.run(
        ["kubectl", "kustomize", str(NAMESPACED)], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    binding = next(d for d in docs if d["kind"] == "RoleBinding" and d["roleRef"]["kind"] == "ClusterRole")
    binding["metadata"]["namespace"] = ns
    rbac = [d for d in docs if d["kind"] in RBAC_KINDS]
    for name in (SYSTEM_NAMESPACE, *(d["metadata"]["namespace"] for d in docs if d["kind"] == "RoleBinding")):
        ensure_namespace(api_client, name)
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all([*rbac, binding]))
    core = client.CoreV1Api(api_client)
    core.create_namespaced_config_map(
        ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="files"), data={"main": "print(1)\n"})
    )
    answer = core.create_namespaced_service_account_token(
        NAMESPACED_SA,
        SYSTEM_NAMESPACE,
        client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
        ),
    )
    kubeconfig = tmp_path / "kubeconfig"
    cluster: dict[str, Any] = {"server": control_plane.url}
    if control_plane.ca_file is not None:
        cluster["certificate-authority"] = str(control_plane.ca_file)
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "local", "cluster": cluster}],
                "users": [{"name": "sa", "user": {"token": answer.status.token}}],
                "contexts": [{"name": "sa", "context": {"cluster": "local", "user": "sa"}}],
                "current-context": "sa",
            }
        )
    )
    operator = OperatorProcess(kubeconfig, tmp_path / "data", tmp_path / "operator.log", namespaces=(ns,))
    with operator:
        source = {"configMap": {"name": "files", "items": [{"key": "main", "path": "main.py"}]}}
        create(api_client, PROJECTS, ns, project_body("p", [source]))
        project = wait_phase(api_client, PROJECTS, ns, "p", "Completed", "Failed", timeout=90)
        assert project["status"]["phase"] == "Completed", project["status"]
        wait_event(api_client, ns, "p", lambda e: e.reason == "Completed")
    denied = permission_problems(operator.logs())
    assert not denied, "the operator hit missing permissions:\n" + "\n".join(denied[:20])
