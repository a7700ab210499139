"""Fixtures for tests against a real local control plane (etcd + kube-apiserver).

One control plane per session; each test gets a fresh namespace. There is no
kube-controller-manager: no garbage collection, namespaces never finish terminating.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import kubernetes.client
import pytest
from support import OperatorProcess

from projectgen_dev.ci import unavailable
from projectgen_dev.controlplane import BinariesNotFoundError, ControlPlane, binaries_version, find_binaries
from projectgen_dev.gitea import GiteaError, GiteaServer, find_gitea
from projectgen_dev.netns import NetworkNamespace
from projectgen_dev.netns import unavailable as netns_unavailable

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = REPO_ROOT / "crds"


class KubectlError(subprocess.CalledProcessError):
    """CalledProcessError whose message includes kubectl's output."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"


class Kubectl(Protocol):
    def __call__(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]: ...


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """The session's control plane, with the CRDs of ``crds/`` installed and KUBECONFIG set."""
    try:
        bin_dir = find_binaries()
    except BinariesNotFoundError as exc:
        unavailable(f"control plane binaries unavailable: {exc}")
    previous = os.environ.get("KUBECONFIG")
    with ControlPlane(bin_dir) as cp:
        if CRD_DIR.is_dir() and any(CRD_DIR.glob("*.yaml")):
            cp.install(CRD_DIR)
        os.environ["KUBECONFIG"] = str(cp.kubeconfig)
        try:
            yield cp
        finally:
            if previous is None:
                os.environ.pop("KUBECONFIG", None)
            else:
                os.environ["KUBECONFIG"] = previous


@pytest.fixture(scope="session")
def api_client(control_plane: ControlPlane) -> Iterator[kubernetes.client.ApiClient]:
    """An ApiClient authenticated as the admin (group system:masters)."""
    with control_plane.api_client() as client:
        yield client


def _namespace_name(test_name: str) -> str:
    suffix = secrets.token_hex(3)
    base = re.sub(r"[^a-z0-9]+", "-", test_name.lower()).strip("-") or "test"
    if not base[0].isalpha():
        base = f"t-{base}"
    base = base[: 63 - len(suffix) - 1].rstrip("-")
    return f"{base}-{suffix}"


@pytest.fixture
def namespace(request: pytest.FixtureRequest, api_client: kubernetes.client.ApiClient) -> str:
    """A fresh namespace named after the test (never deleted: it could not finish terminating)."""
    name = _namespace_name(request.node.name)
    kubernetes.client.CoreV1Api(api_client).create_namespace(
        kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name=name))
    )
    return name


@pytest.fixture(scope="session")
def kubectl(control_plane: ControlPlane) -> Kubectl:
    """``kubectl(*args, input=None, check=True)``: run kubectl against the control plane."""
    kubeconfig = str(control_plane.kubeconfig)

    def run(*args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = ["kubectl", f"--kubeconfig={kubeconfig}", *args]
        proc = subprocess.run(argv, input=input, capture_output=True, text=True, check=False, timeout=60)
        if check and proc.returncode != 0:
            raise KubectlError(proc.returncode, argv, proc.stdout, proc.stderr)
        return proc

    return run


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On a Kubernetes without MutatingAdmissionPolicy v1 (1.35) the tests of manifests/created-by
    are deselected, not skipped: that install does not exist there (webhook/ is the install, and
    its tests run), and test_kube_versions checks that applying it fails."""
    if binaries_version().serves_mutating_admission_policy:
        return
    kept, dropped = [], []
    for item in items:
        (dropped if item.get_closest_marker("created_by_policy") else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture(scope="session")
def admission_policies(control_plane: ControlPlane) -> None:
    """The createdBy admission policies of manifests/created-by, as a user installs them, with
    both kinds admissible (the same readiness rule as the demo and `python -m projectgen_dev controlplane`).
    Where MutatingAdmissionPolicy is not served (1.35), the CRDs alone: createdBy stays empty there
    unless webhook/ is installed, and the tests that need it are deselected."""
    if binaries_version().serves_mutating_admission_policy:
        control_plane.install(CRD_DIR, REPO_ROOT / "manifests" / "created-by")
    else:
        control_plane.install(CRD_DIR)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("projectgen-data")


SOLO_PREFIX = "solo-"


@pytest.fixture(scope="session")
def operator(
    control_plane: ControlPlane,
    admission_policies: None,
    data_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    """One operator for the session, serving every namespace except `solo-*` ones (tests that
    start, stop and kill their own operator use those)."""
    logs = tmp_path_factory.mktemp("operator-logs") / "operator.log"
    proc = OperatorProcess(control_plane.kubeconfig, data_dir, logs, namespaces=(f"!{SOLO_PREFIX}*",))
    with proc:
        yield proc
    print(f"operator log: {logs}")


@pytest.fixture
def solo_namespace(request: pytest.FixtureRequest, api_client: kubernetes.client.ApiClient) -> str:
    """A fresh namespace the session operator ignores."""
    name = SOLO_PREFIX + _namespace_name(request.node.name)[: 63 - len(SOLO_PREFIX)].rstrip("-")
    kubernetes.client.CoreV1Api(api_client).create_namespace(
        kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name=name))
    )
    return name


@pytest.fixture(scope="module")
def network_namespace() -> Iterator[NetworkNamespace]:
    """A network namespace with an address of 198.18.0.0/16 for the module, removed afterwards."""
    reason = netns_unavailable()
    if reason is not None:
        unavailable(reason)
    with NetworkNamespace() as ns:
        yield ns


@pytest.fixture(scope="session")
def gitea_server() -> Iterator[GiteaServer]:
    """One real Gitea on loopback for the session (built into the cache the first time)."""
    try:
        binary = find_gitea()
    except GiteaError as exc:
        unavailable(f"Gitea unavailable: {exc}")
    with GiteaServer(binary) as server:
        yield server
