"""Which Kubernetes projectgen runs on (README, "Supported Kubernetes versions").

The created-by install that fits each version: manifests/created-by/ (MutatingAdmissionPolicy v1)
installs where the API server serves it (1.36 and newer); where it does not (1.35), `kubectl apply`
fails, and what it applied anyway refuses every create naming the version: it never half-works.
The operator refuses an API server older than the supported range at start, naming its version:
a real kube-apiserver emulating 1.34 (``--emulated-version``, the API surface of that release).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from pathlib import Path

import pytest
from support import OperatorProcess

from projectgen import kubeversion
from projectgen_dev.controlplane import (
    ADMIN_USER,
    ControlPlane,
    admission_probes,
    binaries_version,
    wait_admissible,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = REPO_ROOT / "crds"
CREATED_BY = REPO_ROOT / "manifests" / "created-by"


def _kubectl(cp: ControlPlane, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", f"--kubeconfig={cp.kubeconfig}", *args],
        input=input,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.mark.matrix
def test_the_created_by_policy_works_whole_or_refuses_naming_the_version() -> None:
    """1.36+: the install applies and stamps the creator. 1.35: `kubectl apply` fails on the
    MutatingAdmissionPolicy, and what it applied beside refuses every create, naming the version,
    rather than recording whatever creator a user wrote."""
    version = binaries_version()
    with ControlPlane() as cp:
        cp.install_crds(CRD_DIR)
        applied = _kubectl(cp, "apply", "-k", str(CREATED_BY))
        forged = json.dumps({**admission_probes()[0][1], "metadata": {"name": "forged", "namespace": "default",
                             "annotations": {"projectgen.io/created-by": "mallory"}}})  # fmt: skip
        if version.serves_mutating_admission_policy:
            assert applied.returncode == 0, applied.stderr
            with cp.api_client() as client:
                wait_admissible(client, created_by=True)
            made = _kubectl(cp, "create", "-f", "-", "-o", "json", input=forged)
            assert made.returncode == 0, made.stderr
            assert json.loads(made.stdout)["metadata"]["annotations"] == {
                "projectgen.io/created-by": ADMIN_USER
            }
        else:
            assert applied.returncode != 0
            assert (
                'no matches for kind "MutatingAdmissionPolicy" in version "admissionregistration.k8s.io/v1"'
                in (applied.stderr)
            )
            deadline = time.monotonic() + 30
            while True:  # a policy takes effect a moment after it is created
                refused = _kubectl(cp, "create", "-f", "-", input=forged)
                if refused.returncode != 0 or time.monotonic() > deadline:
                    break
                _kubectl(cp, "delete", "gp", "forged", "-n", "default")
                time.sleep(0.2)
            assert refused.returncode != 0
            assert "the creator was not stamped" in refused.stderr
            assert "Kubernetes 1.36 or newer); on Kubernetes 1.35 delete it" in refused.stderr


def test_the_operator_refuses_a_kubernetes_older_than_supported(tmp_path: Path) -> None:
    oldest = kubeversion.OLDEST_MINOR
    with ControlPlane(apiserver_args={"--emulated-version": f"1.{oldest - 1}"}) as cp:
        operator = OperatorProcess(cp.kubeconfig, tmp_path / "data", tmp_path / "operator.log")
        with contextlib.suppress(RuntimeError):  # it exited before it was live: what we want
            operator.start(timeout=60)
        assert operator.proc is not None
        deadline = time.monotonic() + 60
        while operator.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        operator.stop()
        assert operator.proc.returncode not in (None, 0), operator.logs()[-3000:]
        last = operator.logs().strip().splitlines()[-1]  # the pod's termination message ends with it
        assert last.startswith(
            f"error: Kubernetes 1.{oldest - 1} (emulated by {binaries_version().text}) is not supported: "
            f"projectgen needs 1.{oldest} or newer"
        ), last
