"""The install path of the README, for real: the image built from the Dockerfile, `kubectl apply -k`
of the manifests, on a real node (kubelet + containerd + runc, kube-controller-manager, scheduler).

One cluster for the whole module (projectgen_dev.node.Node); the tests run in file order and the
last one stops the cluster and compares the host with what it was before.
The forge samples (export-github.yaml, export-gitlab.yaml) are not applied: they need real
credentials for github.com/gitlab.com, which the tests do not have.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from support import (
    EXPORTS,
    PROJECTS,
    condition,
    create,
    export_body,
    get,
    inline_source,
    permission_problems,
    project_body,
    wait_event,
    wait_for,
    wait_phase,
)

from projectgen_dev import node as node_module
from projectgen_dev.ci import unavailable
from projectgen_dev.node import Node

REPO = Path(__file__).resolve().parents[2]
IMAGE = "localhost/projectgen:node-test"
NAMESPACE = "projectgen-system"
SAMPLES = REPO / "manifests" / "samples"
LANDLOCK_CREATE_RULESET = 444  # x86_64 and aarch64 share the number

pytestmark = pytest.mark.timeout(600)


def _sh(argv: list[str], timeout: float = 600) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout)
    assert proc.returncode == 0, (
        f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return proc.stdout


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    reason = node_module.unavailable()
    if reason is not None:
        unavailable(f"no local node: {reason}")
    if shutil.which("kubectl") is None:
        unavailable("kubectl is not installed")
    node_module.ensure_tools()
    work = Path(tempfile.mkdtemp(prefix="projectgen-node-test-"))
    try:
        started = time.monotonic()
        _sh(["bash", str(REPO / "hack" / "build-image.sh"), IMAGE, "local"], timeout=900)
        archive = work / "image.tar"
        _sh(["podman", "save", "--quiet", "--format", "docker-archive", "-o", str(archive), IMAGE])
        print(f"[node-test] image built and saved in {time.monotonic() - started:.1f}s")
        with Node(keep_workdir=os.environ.get("PROJECTGEN_KEEP_NODE") == "1") as cluster:
            started = time.monotonic()
            cluster.load_image(archive)
            archive.unlink()
            print(f"[node-test] image loaded into containerd in {time.monotonic() - started:.1f}s")
            cluster.test_work = work  # type: ignore[attr-defined]
            yield cluster
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _overlay(node: Node, work: Path) -> Path:
    """manifests/ with the image set by kustomize and the apiserver's address for in-cluster clients."""
    overlay = work / "overlay"
    overlay.mkdir()
    env = [{"name": k, "value": v} for k, v in node.apiserver_env().items()]
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(REPO / "manifests", overlay)],
        "images": [
            {"name": "projectgen", "newName": IMAGE.rpartition(":")[0], "newTag": IMAGE.rpartition(":")[2]}
        ],
        "patches": [
            {
                "target": {"kind": "Deployment", "name": "projectgen"},
                "patch": yaml.safe_dump(
                    {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "metadata": {"name": "projectgen"},
                        # no kube-proxy: the `kubernetes` ClusterIP leads nowhere, the node IP does
                        "spec": {"template": {"spec": {"containers": [{"name": "operator", "env": env}]}}},
                    }
                ),
            }
        ],
    }
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return overlay


def _pv(path: Path) -> dict[str, Any]:
    """A local PV for the operator's PVC (no provisioner here); fsGroup applies to local volumes."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": "projectgen-data-test"},
        "spec": {
            "capacity": {"storage": "20Gi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "local": {"path": str(path)},
            "nodeAffinity": {
                "required": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {
                                    "key": "kubernetes.io/hostname",
                                    "operator": "In",
                                    "values": [node_module.NODE_NAME],
                                }
                            ]
                        }
                    ]
                }
            },
        },
    }


def _operator_pod(api: client.ApiClient) -> client.V1Pod | None:
    pods = (
        client.CoreV1Api(api)
        .list_namespaced_pod(NAMESPACE, label_selector="app.kubernetes.io/component=operator")
        .items
    )
    live = [p for p in pods if p.metadata.deletion_timestamp is None]
    return live[0] if live else None


def _wait_operator_ready(api: client.ApiClient, timeout: float = 120, other_than: str = "") -> client.V1Pod:
    deadline = time.monotonic() + timeout
    pod = None
    while time.monotonic() < deadline:
        pod = _operator_pod(api)
        if pod is not None and pod.metadata.name != other_than:
            ready = [c for c in pod.status.conditions or [] if c.type == "Ready"]
            if ready and ready[0].status == "True":
                return pod
        time.sleep(0.5)
    raise AssertionError(f"operator pod not Ready after {timeout}s: {pod.status if pod else 'no pod'}")


@pytest.fixture(scope="module")
def installed(node: Node) -> client.V1Pod:
    work: Path = node.test_work  # type: ignore[attr-defined]
    data = work / "pv"
    data.mkdir()
    (work / "pv.yaml").write_text(yaml.safe_dump(_pv(data)))
    node.kubectl("apply", "-f", str(work / "pv.yaml"))
    started = time.monotonic()
    node.kubectl("apply", "-k", str(_overlay(node, work)))
    with node.api_client() as api:
        pod = _wait_operator_ready(api)
    print(f"[node-test] operator Ready {time.monotonic() - started:.1f}s after kubectl apply -k")
    return pod


@pytest.fixture(autouse=True)
def _operator_log(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test the operator's log is in the node's log directory (kept with
    PROJECTGEN_KEEP_NODE=1), beside the kubelet's, containerd's and the control plane's."""
    yield
    if "installed" in request.fixturenames:
        node: Node = request.getfixturevalue("node")
        if node.workdir is not None:
            log = node.kubectl("logs", "-n", NAMESPACE, "deploy/projectgen", "--tail=500", check=False)
            (node.log_dir / f"operator-{request.node.name}.log").write_text(log)


def _exec(node: Node, pod: str, *argv: str, check: bool = True) -> str:
    return node.kubectl("exec", "-n", NAMESPACE, pod, "--", *argv, check=check)


def test_install_runs_as_the_manifests_say(node: Node, installed: client.V1Pod) -> None:
    pod = installed.metadata.name
    assert _exec(node, pod, "id", "-u").strip() == "10001"
    assert _exec(node, pod, "id", "-g").strip() == "10001"
    proc = subprocess.run(
        ["kubectl", f"--kubeconfig={node.kubeconfig}", "exec", "-n", NAMESPACE, pod, "--", "touch", "/probe"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode != 0 and "Read-only file system" in proc.stderr, proc.stderr
    # the volume (fsGroup 10001) and /tmp are the writable places
    assert _exec(node, pod, "stat", "-c", "%g", "/var/lib/projectgen").strip() == "10001"
    _exec(node, pod, "touch", "/tmp/probe", "/var/lib/projectgen/probe")
    _exec(node, pod, "rm", "/tmp/probe", "/var/lib/projectgen/probe")
    status = _exec(node, pod, "cat", "/proc/1/status")
    assert "Seccomp:\t2" in status, "the operator does not run under the runtime's default seccomp profile"
    assert "CapEff:\t0000000000000000" in status and "NoNewPrivs:\t1" in status
    # the ServiceAccount token is mounted and the operator uses it: no 403 in its log
    log = node.kubectl("logs", "-n", NAMESPACE, pod)
    assert log.strip(), "the operator logged nothing"
    refused = permission_problems(log)
    assert not refused, refused


EXTENSION_TEMPLATE = {
    "copier.yml": "_jinja_extensions:\n  - jinja2_time.TimeExtension\n",
    "a.txt.jinja": "{{ 1 + 1 }}\n",
}
PLAIN_TEMPLATE = {
    "copier.yml": "name:\n  type: str\n  default: demo\n",
    "{{name}}.txt.jinja": "{{ 1 + 1 }}\n",
}
TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"
LEAK_TEMPLATE = {
    "copier.yml": f"_external_data:\n  token: {TOKEN}\n",
    "token.txt.jinja": "{{ _external_data.token }}\n",
}
# Template code that tries the calls of issue 22 on its parent (the render server) and on the
# operator (pid 1 of the container), each a no-op if it were allowed, and fails the render naming
# any that went through.
REACH_TEMPLATE = {
    "copier.yml": "_jinja_extensions:\n  - copier_templates_extensions.TemplateExtensionLoader\n"
    "  - reach.py:Reach\n",
    "reach.py": """import fcntl, os, resource
from jinja2.ext import Extension


class Reach(Extension):
    def __init__(self, environment):
        super().__init__(environment)
        reached = []
        r, _ = os.pipe()
        for pid in (os.getppid(), 1):
            tries = {
                "prlimit64": lambda: resource.prlimit(pid, resource.RLIMIT_CORE, (0, 0)),
                "setpriority": lambda: os.setpriority(os.PRIO_PROCESS, pid, os.getpriority(os.PRIO_PROCESS, pid)),
                "sched_setaffinity": lambda: os.sched_setaffinity(pid, os.sched_getaffinity(pid)),
                "F_SETOWN": lambda: fcntl.fcntl(r, fcntl.F_SETOWN, pid),
                "kill": lambda: os.kill(pid, 0),
            }
            for name, fn in tries.items():
                try:
                    fn()
                    reached.append(f"{name}({pid})")
                except OSError:
                    pass
        if reached:
            raise RuntimeError("reached " + " ".join(reached))
""",
    "a.txt.jinja": "{{ 1 + 1 }}\n",
}


PROGRAMS_TEMPLATE = {
    "copier.yml": "_jinja_extensions:\n  - copier_templates_extensions.TemplateExtensionLoader\n"
    "  - programs.py:Programs\n",
    "programs.py": """import os, subprocess
from jinja2.ext import Extension


class Programs(Extension):
    def __init__(self, environment):
        super().__init__(environment)
        reached = []
        # programs the render starts signal neither the render server nor the operator (pid 1)
        for pid in (os.getppid(), 1):
            for sig in ("0", "KILL"):
                p = subprocess.run(["sh", "-c", f"kill -{sig} {pid}"], capture_output=True)
                if p.returncode == 0:
                    reached.append(f"kill -{sig} {pid}")
        name = subprocess.run(["git", "config", "user.name"], capture_output=True, text=True)
        if name.stdout.strip():
            reached.append("a git identity: " + name.stdout)
        if reached:
            raise RuntimeError("reached " + " ".join(reached))
        environment.globals["git_exit"] = name.returncode
""",
    "who.txt.jinja": "{{ git_exit }}\n",
}
KILL_PARENT_TEMPLATE = {"copier.yml": '_tasks:\n  - "kill -KILL $PPID"\n', "a.txt": "a\n"}


def _configmap_template(node: Node, namespace: str, name: str, files: dict[str, str]) -> dict[str, Any]:
    """A ConfigMap holding `files` (keys k0, k1, ...), and the template source that reads it."""
    keys = {f"k{i}": path for i, path in enumerate(files)}
    literals = [f"--from-literal={key}={files[path]}" for key, path in keys.items()]
    node.kubectl("create", "configmap", "-n", namespace, name, *literals)
    items = [{"key": key, "path": path} for key, path in keys.items()]
    return {"template": {"configMap": {"name": name, "items": items}}}


def _landlock_in_pod(node: Node, pod: str) -> bool:
    """Whether landlock_create_ruleset(NULL, 0, VERSION) works in the pod (under RuntimeDefault)."""
    code = (
        f"import ctypes;print(ctypes.CDLL(None,use_errno=True).syscall({LANDLOCK_CREATE_RULESET},None,0,1))"
    )
    return int(_exec(node, pod, "python3", "-c", code).strip()) > 0


def test_the_samples_complete_and_the_sandbox_runs_under_the_runtime_profile(
    node: Node, installed: client.V1Pod
) -> None:
    namespace = "samples"
    node.kubectl("create", "namespace", namespace)
    for sample in ("generatedproject.yaml", "export-zip.yaml", "export-tar.yaml", "export-targz.yaml"):
        node.kubectl("apply", "-n", namespace, "-f", str(SAMPLES / sample))
    with node.api_client() as api:
        project = wait_phase(api, PROJECTS, namespace, "billing-api", "Completed", timeout=120)
        assert project["status"]["phase"] == "Completed"
        for name in ("billing-api-zip", "billing-api-tar", "billing-api-targz"):
            obj = wait_phase(api, EXPORTS, namespace, name, "Completed", "Failed", timeout=120)
            assert obj["status"]["phase"] == "Completed", obj["status"]
        # a template that loads a Jinja extension needs Landlock (the sandbox runs inside the pod,
        # so under containerd's default seccomp profile)
        source = _configmap_template(node, namespace, "ext-template", EXTENSION_TEMPLATE)
        create(api, PROJECTS, namespace, project_body("ext", [source]))
        # RuntimeDefault on our node allows Landlock: the sandbox confines the render and it completes
        assert _landlock_in_pod(node, installed.metadata.name), "Landlock unavailable under RuntimeDefault"
        obj = wait_phase(api, PROJECTS, namespace, "ext", "Completed", "Failed", timeout=120)
        assert obj["status"]["phase"] == "Completed", obj["status"]
        # template code reaches neither its parent nor the operator (issue 22, item 1)
        source = _configmap_template(node, namespace, "reach-template", REACH_TEMPLATE)
        create(api, PROJECTS, namespace, project_body("reach", [source]))
        obj = wait_phase(api, PROJECTS, namespace, "reach", "Completed", "Failed", timeout=120)
        assert obj["status"]["phase"] == "Completed", obj["status"]
        # no template reads the pod's token (issue 22, item 2)
        source = _configmap_template(node, namespace, "leak-template", LEAK_TEMPLATE)
        create(api, PROJECTS, namespace, project_body("leak", [source]))
        obj = wait_phase(api, PROJECTS, namespace, "leak", "Completed", "Failed", timeout=120)
        assert obj["status"]["phase"] == "Failed", obj["status"]
        assert "_external_data.token" in obj["status"]["errorMessage"], obj["status"]


def test_programs_a_template_starts_signal_only_their_own_render(node: Node, installed: client.V1Pod) -> None:
    """Issue 25: in the pod, under RuntimeDefault, programs run (git finds no identity) and
    reach neither the render server nor the operator; a task that kills its parent (the render)
    fails only its own resource, and the operator's container does not restart."""
    namespace = "programs"
    node.kubectl("create", "namespace", namespace)
    restarts = _restarts(node, installed.metadata.name)
    with node.api_client() as api:
        source = _configmap_template(node, namespace, "programs-template", PROGRAMS_TEMPLATE)
        create(api, PROJECTS, namespace, project_body("programs", [source]))
        killer = _configmap_template(node, namespace, "kill-parent-template", KILL_PARENT_TEMPLATE)
        killer["template"]["tasks"] = "Run"
        create(api, PROJECTS, namespace, project_body("kill-parent", [killer]))
        obj = wait_phase(api, PROJECTS, namespace, "programs", "Completed", "Failed", timeout=120)
        assert obj["status"]["phase"] == "Completed", obj["status"]
        failed = wait_phase(api, PROJECTS, namespace, "kill-parent", "Completed", "Failed", timeout=120)
        assert failed["status"]["phase"] == "Failed", failed["status"]
        assert "killed by a signal (SIGKILL)" in failed["status"]["errorMessage"], failed["status"]
    assert _restarts(node, installed.metadata.name) == restarts


def _restarts(node: Node, pod: str) -> int:
    out = node.kubectl(
        "get", "pod", "-n", NAMESPACE, pod, "-o", "jsonpath={.status.containerStatuses[0].restartCount}"
    )
    return int(out.strip() or 0)


def test_garbage_collection_of_exports(node: Node, installed: client.V1Pod) -> None:
    namespace = "samples"
    with node.api_client() as api:
        assert get(api, EXPORTS, namespace, "billing-api-zip") is not None
        node.kubectl("delete", "-n", namespace, "generatedproject", "billing-api", "--wait=false")
        deadline = time.monotonic() + 90
        left: list[str] = []
        while time.monotonic() < deadline:
            left = [
                n
                for n in ("billing-api-zip", "billing-api-tar", "billing-api-targz")
                if get(api, EXPORTS, namespace, n)
            ]
            if not left:
                break
            time.sleep(0.5)
        assert not left, f"RepositoryExports not garbage-collected: {left}"


def test_deleting_a_namespace_completes(node: Node, installed: client.V1Pod) -> None:
    namespace = "samples"
    with node.api_client() as api:
        node.kubectl("delete", "namespace", namespace, "--wait=false")
        core = client.CoreV1Api(api)
        deadline = time.monotonic() + 45  # a few seconds when it works
        while time.monotonic() < deadline and namespace in [
            n.metadata.name for n in core.list_namespace().items
        ]:
            time.sleep(0.5)
        if namespace in [n.metadata.name for n in core.list_namespace().items]:
            status = core.read_namespace(namespace).status
            left = node.kubectl(
                "get", "generatedprojects,repositoryexports", "-n", namespace, "-o", "yaml", check=False
            )
            raise AssertionError(f"namespace {namespace} not deleted after 45s: {status}\n{left[-3000:]}")
        assert namespace not in [n.metadata.name for n in core.list_namespace().items]


def test_a_new_pod_finishes_the_work_of_a_deleted_one(node: Node, installed: client.V1Pod) -> None:
    namespace = "restart"
    node.kubectl("create", "namespace", namespace)
    files = {f"f{i:03}.txt": f"{i}\n" * 2000 for i in range(150)}
    exports = [f"big-{kind}-{i}" for i in range(2) for kind in ("zip", "tar", "tar.gz")]
    # the project's last source is a ConfigMap created only after the pod is gone: the old pod takes
    # the project and every export, then waits at a known point, whatever the machine's speed
    sources = [inline_source(files), {"configMap": {"name": "big-late"}}]
    with node.api_client() as api:
        old = _wait_operator_ready(api)
        create(api, PROJECTS, namespace, project_body("big", sources))
        for name in exports:
            create(api, EXPORTS, namespace, export_body(name.replace(".", ""), "big", name.split("-")[1]))
        project = wait_for(
            api,
            PROJECTS,
            namespace,
            "big",
            lambda obj: "ConfigMap 'big-late' not found" in condition(obj, "Ready").get("message", ""),
            what="waiting for its ConfigMap",
        )
        assert project["status"]["phase"] == "Pending", project["status"]
        for name in exports:
            wait_phase(api, EXPORTS, namespace, name.replace(".", ""), "Pending")
        node.kubectl("delete", "pod", "-n", NAMESPACE, old.metadata.name, "--timeout=120s")
        node.kubectl("create", "configmap", "-n", namespace, "big-late", "--from-literal=late.txt=late")
        new = _wait_operator_ready(api, other_than=old.metadata.name, timeout=120)
        assert new.metadata.name != old.metadata.name
        wait_phase(api, PROJECTS, namespace, "big", "Completed", timeout=120)
        for name in exports:
            obj = wait_phase(
                api, EXPORTS, namespace, name.replace(".", ""), "Completed", "Failed", timeout=120
            )
            assert obj["status"]["phase"] == "Completed", obj["status"]
    work: Path = node.test_work  # type: ignore[attr-defined]
    staging = work / "pv" / ".staging"
    assert staging.is_dir()
    assert sorted(p.name for p in staging.iterdir()) == [], "staging debris after the restart"


# A seccomp profile that forbids Landlock's syscalls, as one that does not list them does (runc
# answers EPERM for an unlisted syscall older than the profile's newest): landlock_* get EPERM.
NO_LANDLOCK_PROFILE = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "syscalls": [
        {
            "names": ["landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": 1,
        }
    ],
}


def _seccomp(node: Node, profile: dict[str, str | None]) -> client.V1Pod:
    """Roll the operator onto pod-level seccompProfile `profile`; the new pod, Ready."""
    with node.api_client() as api:
        old = _wait_operator_ready(api)
        patch = {"spec": {"template": {"spec": {"securityContext": {"seccompProfile": profile}}}}}
        node.kubectl("patch", "deployment", "-n", NAMESPACE, "projectgen", "-p", json.dumps(patch))
        return _wait_operator_ready(api, other_than=old.metadata.name, timeout=120)


def test_where_the_runtime_forbids_landlock_plain_templates_render_and_extensions_fail_saying_why(
    node: Node, installed: client.V1Pod
) -> None:
    namespace = "no-landlock"
    node.kubectl("create", "namespace", namespace)
    plain = _configmap_template(node, namespace, "plain-template", PLAIN_TEMPLATE)
    extensions = _configmap_template(node, namespace, "ext-template", EXTENSION_TEMPLATE)
    leak = _configmap_template(node, namespace, "leak-template", LEAK_TEMPLATE)
    (node.root_dir / "seccomp").mkdir(exist_ok=True)
    (node.root_dir / "seccomp" / "no-landlock.json").write_text(json.dumps(NO_LANDLOCK_PROFILE))
    pod = _seccomp(node, {"type": "Localhost", "localhostProfile": "no-landlock.json"})
    try:
        assert "Seccomp:\t2" in _exec(node, pod.metadata.name, "cat", "/proc/1/status")
        assert not _landlock_in_pod(node, pod.metadata.name), "the profile did not forbid Landlock"
        with node.api_client() as api:
            create(api, PROJECTS, namespace, project_body("plain", [plain]))
            create(api, PROJECTS, namespace, project_body("ext", [extensions]))
            done = wait_phase(api, PROJECTS, namespace, "plain", "Completed", "Failed", timeout=120)
            assert done["status"]["phase"] == "Completed", done["status"]
            assert [f["path"] for f in done["status"]["files"]] == ["demo.txt"]
            failed = wait_phase(api, PROJECTS, namespace, "ext", "Completed", "Failed", timeout=120)
            assert failed["status"]["phase"] == "Failed", failed["status"]
            message = failed["status"]["errorMessage"]
            assert "the container's seccomp profile forbids it" in message, message
            assert "allow landlock_create_ruleset, landlock_add_rule and landlock_restrict_self" in message
            wait_event(api, namespace, "ext", lambda e: "seccomp profile forbids" in (e.message or ""))
            # without Landlock, a plain template still reads nothing outside its checkout (issue 22, item 2)
            token = _exec(node, pod.metadata.name, "cat", TOKEN).strip()
            create(api, PROJECTS, namespace, project_body("leak", [leak]))
            leaked = wait_phase(api, PROJECTS, namespace, "leak", "Completed", "Failed", timeout=120)
            assert leaked["status"]["phase"] == "Failed", leaked["status"]
            assert "_external_data.token" in leaked["status"]["errorMessage"], leaked["status"]
            assert token and token not in json.dumps(leaked)
    finally:
        _seccomp(node, {"type": "RuntimeDefault", "localhostProfile": None})


def test_the_liveness_probe_passes(node: Node, installed: client.V1Pod) -> None:
    with node.api_client() as api:
        pod = _wait_operator_ready(api)
        # initialDelaySeconds 10 + periodSeconds 20: at least one probe has run after 31 s
        age = time.time() - pod.status.start_time.timestamp()
        if age < 31:
            time.sleep(31 - age)
        pod = client.CoreV1Api(api).read_namespaced_pod(pod.metadata.name, NAMESPACE)
        assert pod.status.container_statuses[0].restart_count == 0
        events = (
            client.CoreV1Api(api)
            .list_namespaced_event(NAMESPACE, field_selector=f"involvedObject.name={pod.metadata.name}")
            .items
        )
        unhealthy = [e.message for e in events if e.reason == "Unhealthy"]
        assert not unhealthy, unhealthy
    rss = node.rss()
    summary = ", ".join(f"{k} {v / 2**20:.0f}" for k, v in sorted(rss.items()))
    print(f"[node-test] resident memory (MiB): {summary}; total {sum(rss.values()) / 2**20:.0f}")


def test_the_host_is_left_as_it_was(node: Node) -> None:
    """Last: stops the cluster, then sysctls, links, netns, chains, mounts and cgroups are as before."""
    before = node.before
    assert before is not None
    node.stop()
    after = node_module.HostState.snapshot()
    ours = node.netns_tag
    assert ours

    def foreign(item: str) -> bool:  # another test run's namespace (projectgen_dev.netns names)
        return any(tag != ours for tag in re.findall(r"pgh?-?([0-9a-f]{8})\b", item))

    assert before.differences(after, foreign) == []
