"""The kustomize base (manifests/) and the samples, without a cluster: what they build to, and the
promises they keep (one replica, Recreate, liveness, non-root, read-only root file system, exactly
the documented RBAC). tests/integration/test_rbac.py applies them to a real API server."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from projectgen.api.v1alpha1 import GeneratedProjectSpec, RepositoryExportSpec
from projectgen_dev.ci import unavailable

REPO_ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = REPO_ROOT / "manifests"
SAMPLES = MANIFESTS / "samples"
NAMESPACE = "projectgen-system"
DATA_DIR = "/var/lib/projectgen"

# The ClusterRole, rule by rule: what the operator calls and nothing else (manifests/cluster/rbac.yaml says why).
EXPECTED_RULES = [
    {
        "apiGroups": ["projectgen.io"],
        "resources": ["generatedprojects"],
        "verbs": ["get", "list", "watch", "patch"],
    },
    {"apiGroups": ["projectgen.io"], "resources": ["repositoryexports"], "verbs": ["list", "watch", "patch"]},
    {
        "apiGroups": ["projectgen.io"],
        "resources": ["generatedprojects/status", "repositoryexports/status"],
        "verbs": ["patch"],
    },
    {"apiGroups": [""], "resources": ["configmaps", "secrets"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    {
        "apiGroups": ["apiextensions.k8s.io"],
        "resources": ["customresourcedefinitions"],
        "verbs": ["list", "watch"],
    },
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]},
]


@pytest.fixture(scope="module")
def built() -> list[dict[str, Any]]:
    if shutil.which("kubectl") is None:
        unavailable("kubectl (kustomize) is not on PATH")
    proc = subprocess.run(
        ["kubectl", "kustomize", str(MANIFESTS)], capture_output=True, text=True, check=False, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"{len(found)} {kind}s"
    return found[0]


def test_kustomize_builds_the_whole_install(built: list[dict[str, Any]]) -> None:
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in built)
    assert kinds == sorted(
        [
            ("Namespace", NAMESPACE),
            ("CustomResourceDefinition", "generatedprojects.projectgen.io"),
            ("CustomResourceDefinition", "repositoryexports.projectgen.io"),
            ("ServiceAccount", "projectgen"),
            ("ClusterRole", "projectgen"),
            ("ClusterRoleBinding", "projectgen"),
            ("PersistentVolumeClaim", "projectgen-data"),
            ("ConfigMap", "projectgen-policy"),
            ("Deployment", "projectgen"),
            ("Service", "projectgen-metrics"),
            # The download API: its APIService and Service, who may download, and the operator's
            # delegated authentication/authorisation, caBundle patch and CA Secret.
            ("APIService", "v1alpha1.download.projectgen.io"),
            ("Service", "projectgen-api"),
            ("ClusterRole", "projectgen-download"),
            ("ClusterRole", "projectgen-view"),
            ("ClusterRoleBinding", "projectgen-auth-delegator"),
            ("RoleBinding", "projectgen-auth-reader"),
            ("ClusterRole", "projectgen-apiservice"),
            ("ClusterRoleBinding", "projectgen-apiservice"),
            ("Role", "projectgen-serving-ca"),
            ("RoleBinding", "projectgen-serving-ca"),
        ]
    )
    for doc in built:
        if doc["kind"] in (
            "ServiceAccount",
            "PersistentVolumeClaim",
            "Deployment",
            "ConfigMap",
            "Service",
            "Role",
        ):
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["kind"]
        if doc["kind"] == "RoleBinding":  # the requestheader ConfigMap's reader, and the CA Secret's
            assert doc["metadata"]["namespace"] == (
                "kube-system" if doc["metadata"]["name"] == "projectgen-auth-reader" else NAMESPACE
            )
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "projectgen"


def test_crds_are_the_generated_ones(built: list[dict[str, Any]]) -> None:
    """manifests/ installs crds/ as generated (plus kustomize's labels), not a copy that can drift."""
    for path in sorted((REPO_ROOT / "crds").glob("*.projectgen.io.yaml")):
        crd = yaml.safe_load(path.read_text())
        (ours,) = [d for d in built if d["metadata"]["name"] == crd["metadata"]["name"]]
        assert ours["spec"] == crd["spec"]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    found: dict[str, Any] = containers[0]
    return found


def test_deployment(built: list[dict[str, Any]]) -> None:
    deployment = one(built, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1  # kopf runs standalone
    assert spec["strategy"] == {"type": "Recreate"}  # never two operators on one volume
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == one(built, "ServiceAccount")["metadata"]["name"]
    assert pod["enableServiceLinks"] is False  # Service link variables would land in PROJECTGEN_*
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()

    c = container(deployment)
    assert c["image"] == "projectgen:0.1.0"  # pinned by kustomize's images:, never latest
    assert c["args"] == ["run"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["PROJECTGEN_DATA_DIR"] == DATA_DIR
    assert env["HOME"] == "/tmp" and env["TMPDIR"] == "/tmp"

    probe = c["livenessProbe"]
    assert probe["httpGet"]["path"] == "/healthz"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports[probe["httpGet"]["port"]] == int(env["PROJECTGEN_LIVENESS_PORT"])
    assert "readinessProbe" not in c  # nothing routes traffic to the operator

    resources = c["resources"]
    assert set(resources["requests"]) == {"cpu", "memory"}
    assert set(resources["limits"]) >= {"memory"}

    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True
    assert psc["runAsUser"] == 10001 and psc["runAsGroup"] == 10001 and psc["fsGroup"] == 10001
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    csc = c["securityContext"]
    assert csc["readOnlyRootFilesystem"] is True
    assert csc["allowPrivilegeEscalation"] is False
    assert csc["capabilities"] == {"drop": ["ALL"]}


def test_metrics_port_is_served_by_a_service_named_metrics(built: list[dict[str, Any]]) -> None:
    """Prometheus finds the operator's /metrics through the Service: port `metrics`, the pod's
    PROJECTGEN_METRICS_PORT, and the prometheus.io annotations naming the same port."""
    deployment = one(built, "Deployment")
    c = container(deployment)
    env = {e["name"]: e.get("value") for e in c["env"]}
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    metrics_port = int(env["PROJECTGEN_METRICS_PORT"])
    assert ports["metrics"] == metrics_port
    assert metrics_port != int(env["PROJECTGEN_LIVENESS_PORT"])  # liveness stays on its own port

    service = one(built, "Service", "projectgen-metrics")
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    assert port["name"] == "metrics" and port["targetPort"] == "metrics"
    annotations = service["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == port["port"]
    assert annotations["prometheus.io/path"] == "/metrics"


def test_deployment_volumes(built: list[dict[str, Any]]) -> None:
    """Only two places are written: the data volume (the PVC) and /tmp (an emptyDir); the outbound
    policy is mounted read-only from its ConfigMap, optional (no ConfigMap: the default policy)."""
    deployment = one(built, "Deployment")
    pvc = one(built, "PersistentVolumeClaim")
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container(deployment)["volumeMounts"]}
    assert set(mounts) == {DATA_DIR, "/tmp", "/etc/projectgen/policy"}
    policy = volumes[mounts["/etc/projectgen/policy"]]["configMap"]
    assert policy == {"name": one(built, "ConfigMap")["metadata"]["name"], "optional": True}
    env = {e["name"]: e.get("value") for e in container(deployment)["env"]}
    assert env["PROJECTGEN_POLICY_FILE"] == "/etc/projectgen/policy/policy.yaml"
    assert volumes[mounts[DATA_DIR]]["persistentVolumeClaim"] == {"claimName": pvc["metadata"]["name"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert pvc["spec"]["resources"]["requests"]["storage"]


def test_cluster_role_is_exactly_the_documented_set(built: list[dict[str, Any]]) -> None:
    role = one(built, "ClusterRole", "projectgen")
    assert role["rules"] == EXPECTED_RULES
    verbs = {v for rule in role["rules"] for v in rule["verbs"]}
    assert verbs == {"get", "list", "watch", "patch", "create"}
    assert not any("*" in rule[k] for rule in role["rules"] for k in ("apiGroups", "resources", "verbs"))


def test_cluster_role_binding(built: list[dict[str, Any]]) -> None:
    binding = one(built, "ClusterRoleBinding", "projectgen")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": one(built, "ClusterRole", "projectgen")["metadata"]["name"],
    }
    sa = one(built, "ServiceAccount")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": NAMESPACE}
    ]


# --- samples ------------------------------------------------------------------------------------

SAMPLE_FILES = {
    "generatedproject.yaml": ("GeneratedProject", None),
    "export-zip.yaml": ("RepositoryExport", "zip"),
    "export-tar.yaml": ("RepositoryExport", "tar"),
    "export-targz.yaml": ("RepositoryExport", "tar.gz"),
    "export-github.yaml": ("RepositoryExport", "github"),
    "export-gitlab.yaml": ("RepositoryExport", "gitlab"),
}


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_one_sample_per_kind_and_export_type() -> None:
    assert {p.name for p in SAMPLES.glob("*.yaml")} == set(SAMPLE_FILES)
    project_names = {d["metadata"]["name"] for d in documents(SAMPLES / "generatedproject.yaml")}
    for name, (kind, export_type) in SAMPLE_FILES.items():
        docs = documents(SAMPLES / name)
        (main,) = [d for d in docs if d["apiVersion"] == "projectgen.io/v1alpha1"]
        assert main["kind"] == kind
        assert "namespace" not in main["metadata"]  # apply into any namespace
        if kind == "GeneratedProject":
            GeneratedProjectSpec.model_validate(main["spec"])
        else:
            spec = RepositoryExportSpec.model_validate(main["spec"])
            assert spec.export_type == export_type
            assert spec.generated_project_ref.name in project_names


def test_github_sample_secret_is_a_placeholder() -> None:
    docs = documents(SAMPLES / "export-github.yaml")
    (secret,) = [d for d in docs if d["kind"] == "Secret"]
    (export,) = [d for d in docs if d["kind"] == "RepositoryExport"]
    ref = export["spec"]["config"]["credentialsSecretRef"]
    assert ref["name"] == secret["metadata"]["name"]
    assert set(secret["stringData"]) == {ref.get("key", "token")}
    assert secret["stringData"][ref.get("key", "token")].startswith("REPLACE_")


def test_generatedproject_sample_renders(tmp_path: Path) -> None:
    """The sample's template (a ConfigMap, `items` giving the paths) and inline files render offline."""
    sample = SAMPLES / "generatedproject.yaml"
    configmaps = tmp_path / "configmaps.yaml"
    configmaps.write_text(yaml.safe_dump_all([d for d in documents(sample) if d["kind"] == "ConfigMap"]))
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "projectgen",
            "render",
            "-f",
            str(sample),
            "--configmap",
            str(configmaps),
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == [
        ".github/CODEOWNERS",
        "README.md",
        "pyproject.toml",
        "scripts/run.sh",
        "src/billing_api/__init__.py",
        "src/billing_api/app.py",
    ]
    assert (out / "README.md").read_text().startswith("# billing-api\n")
    assert 'requires-python = ">=3.12"' in (out / "pyproject.toml").read_text()
    assert os.access(out / "scripts/run.sh", os.X_OK)


def test_sharded_overlay_runs_disjoint_shards_on_one_rbac() -> None:
    """manifests/overlays/sharded: two Deployments on disjoint label selectors, each with its own
    volume, sharing one ServiceAccount, ClusterRole and the CRDs (the scale-out plan in the README)."""
    out = subprocess.run(
        ["kubectl", "kustomize", str(MANIFESTS / "overlays" / "sharded")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    kinds = sorted(d["kind"] for d in docs)
    assert kinds.count("Deployment") == 2 and kinds.count("ServiceAccount") == 1
    assert kinds.count("APIService") == 1  # one download API for all shards
    assert sorted(d["metadata"]["name"] for d in docs if d["kind"] == "ClusterRole") == [
        "projectgen",
        "projectgen-apiservice",
        "projectgen-download",
        "projectgen-view",
    ]
    shards = {}
    for dep in (d for d in docs if d["kind"] == "Deployment"):
        pod = dep["spec"]["template"]["spec"]
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        claim = pod["volumes"][0]["persistentVolumeClaim"]["claimName"]
        shards[env["PROJECTGEN_LABEL_SELECTOR"]] = (claim, pod["serviceAccountName"], dep["spec"]["replicas"])
    assert shards == {
        "projectgen.io/shard=a": ("projectgen-data-shard-a", "projectgen", 1),
        "projectgen.io/shard=b": ("projectgen-data-shard-b", "projectgen", 1),
    }
    claims = {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}
    assert claims == {"projectgen-data-shard-a", "projectgen-data-shard-b"}
    # One metrics Service per shard, each selecting only its shard's pod (each has its own counters);
    # the download API's Service selects every shard, and each shard has its own to be forwarded to.
    services = {d["metadata"]["name"]: d["spec"]["selector"] for d in docs if d["kind"] == "Service"}
    assert {name: sel.get("projectgen.io/shard") for name, sel in services.items()} == {
        "projectgen-metrics-shard-a": "a",
        "projectgen-metrics-shard-b": "b",
        "projectgen-api": None,
        "projectgen-api-shard-a": "a",
        "projectgen-api-shard-b": "b",
    }
    apiservice = next(d for d in docs if d["kind"] == "APIService")
    assert apiservice["spec"]["service"]["name"] == "projectgen-api"
    for dep in (d for d in docs if d["kind"] == "Deployment"):
        labels = dep["spec"]["template"]["metadata"]["labels"]
        shard = labels["projectgen.io/shard"]
        assert sorted(n for n, sel in services.items() if sel.items() <= labels.items()) == [
            "projectgen-api",
            f"projectgen-api-shard-{shard}",
            f"projectgen-metrics-shard-{shard}",
        ]
        env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["PROJECTGEN_SHARD"] == shard
        urls = dict(pair.split("=", 1) for pair in env["PROJECTGEN_SHARD_URLS"].split(","))
        assert urls == {s: f"https://projectgen-api-shard-{s}.{NAMESPACE}.svc" for s in "ab"}
        assert f"projectgen-api-shard-{shard}.{NAMESPACE}.svc" in env["PROJECTGEN_SERVING_NAMES"].split(",")


def test_namespaced_overlay_grants_configmaps_and_secrets_only_in_its_namespaces() -> None:
    proc = subprocess.run(
        ["kubectl", "kustomize", str(MANIFESTS / "overlays" / "namespaced")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    roles = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ClusterRole"}
    bound = {d["roleRef"]["name"] for d in docs if d["kind"] == "ClusterRoleBinding"}
    # What is bound cluster-wide reads no ConfigMap or Secret (system:auth-delegator is built in:
    # create TokenReviews and SubjectAccessReviews, nothing else).
    assert "system:auth-delegator" in bound
    for name in bound - {"system:auth-delegator"}:
        assert not any({"configmaps", "secrets"} & set(r["resources"]) for r in roles[name]["rules"])
    everything = [d for d in docs if d["kind"] == "RoleBinding"]
    bindings = [b for b in everything if b["roleRef"]["kind"] == "ClusterRole"]
    # The others: the requestheader ConfigMap's reader in kube-system, and the CA Secret's by name.
    others = {(b["metadata"]["namespace"], b["roleRef"]["name"]) for b in everything if b not in bindings}
    assert others == {
        ("kube-system", "extension-apiserver-authentication-reader"),
        (NAMESPACE, "projectgen-serving-ca-namespaced"),
    }
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    served = env["PROJECTGEN_NAMESPACES"].split()
    assert sorted(b["metadata"]["namespace"] for b in bindings) == sorted(served)
    sa = next(d for d in docs if d["kind"] == "ServiceAccount")
    for b in bindings:
        assert b["subjects"] == [
            {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": NAMESPACE}
        ]
        assert roles[b["roleRef"]["name"]]["rules"] == [
            {"apiGroups": [""], "resources": ["configmaps", "secrets"], "verbs": ["get"]}
        ]
