"""`python -m projectgen_dev demo` (`make demo`): the whole loop on one machine, no cluster needed.

Starts a local kube-apiserver + etcd (built once from the Go module proxy), installs the CRDs and
the createdBy admission policies, starts the operator with a local data directory and a loopback
stand-in for the GitHub API, applies the samples of `manifests/samples/`, waits until they are
Ready, shows what came out, downloads the zip as a tenant and checks its SHA-256, and stops
everything (`--keep` leaves it running).

The download goes through kube-apiserver's aggregation layer when this process may create a
network namespace (root): the APIService's endpoint must not be a loopback address, so the demo
makes a namespace only for the host side of its veth link (a 198.18.0.0/15 address in this
namespace), and kube-apiserver dials the operator there. Without root it says so and asks the
operator's download server directly, presenting the front-proxy certificate as kube-apiserver
would: the same server code, authentication and SubjectAccessReview, minus the aggregator.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import yaml

from projectgen_dev.aggregation import aggregate_cluster_roles, endpoint_slice
from projectgen_dev.controlplane import ControlPlane, find_binaries, is_crd_not_ready
from projectgen_dev.fakehosts import FakeGitHub
from projectgen_dev.netns import NetworkNamespace
from projectgen_dev.netns import unavailable as netns_unavailable

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLES = REPO_ROOT / "manifests" / "samples"
NAMESPACE = "demo"
SYSTEM = "projectgen-system"
DOWNLOAD = REPO_ROOT / "manifests" / "download"
TENANT = "demo-user"
ZIP_EXPORT = "billing-api-zip"


def _say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def _kubectl(kubeconfig: Path, *args: str, input: str | None = None, check: bool = True) -> str:
    deadline = time.monotonic() + 60
    while True:
        proc = subprocess.run(
            ["kubectl", f"--kubeconfig={kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            check=False,
        )
        # Right after installing, the API server may briefly answer 503 for our kinds: retry that only.
        if proc.returncode == 0 or not is_crd_not_ready(None, proc.stderr) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if check and proc.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed:\n{proc.stderr}")
    return proc.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _sample_objects(github_api: str, token: str) -> list[dict[str, Any]]:
    """The samples, with the GitHub export pointed at the loopback stand-in and its Secret filled in."""
    objects: list[dict[str, Any]] = []
    for name in ("generatedproject.yaml", "export-zip.yaml", "export-targz.yaml", "export-github.yaml"):
        for doc in _documents(SAMPLES / name):
            if doc.get("kind") == "Secret":
                doc["stringData"] = {key: token for key in (doc.get("stringData") or {"token": ""})}
                doc.pop("data", None)
            if doc.get("kind") == "RepositoryExport" and doc["spec"].get("exportType") == "github":
                doc["spec"]["config"]["apiUrl"] = github_api
            doc.setdefault("metadata", {})["namespace"] = NAMESPACE
            objects.append(doc)
    return objects


def _wait_ready(kubeconfig: Path, kinds: list[str], timeout: int) -> bool:
    """Wait for Ready, but return as soon as anything is Stalled so a failure never hangs the demo."""
    result: dict[str, bool] = {}

    def wait(condition: str) -> None:
        proc = subprocess.run(
            [
                "kubectl",
                f"--kubeconfig={kubeconfig}",
                "wait",
                "-n",
                NAMESPACE,
                f"--for=condition={condition}",
                f"--timeout={timeout}s",
                *kinds,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        result[condition] = proc.returncode == 0

    ready = threading.Thread(target=wait, args=("Ready",), daemon=True)
    ready.start()
    deadline = time.monotonic() + timeout
    while ready.is_alive() and time.monotonic() < deadline:
        out = _kubectl(
            kubeconfig,
            "get",
            "-n",
            NAMESPACE,
            *kinds,
            "-o",
            "jsonpath={range .items[*]}{.status.conditions[?(@.type=='Stalled')].status}{'\\n'}{end}",
            check=False,
        )
        if "True" in out.split():
            return False
        ready.join(1)
    return result.get("Ready", False)


def _show_archives(kubeconfig: Path) -> None:
    paths = _kubectl(
        kubeconfig,
        "get",
        "rexp",
        "-n",
        NAMESPACE,
        "-o",
        "jsonpath={range .items[*]}{.status.archivePath}{'\\n'}{end}",
    ).split()
    for path in paths:
        print(f"\n{path}")
        if path.endswith(".zip"):
            with zipfile.ZipFile(path) as zf:
                for info in zf.infolist():
                    print(f"  {info.file_size:>8}  {info.filename}")
        else:
            with tarfile.open(path) as tf:
                for member in tf.getmembers():
                    print(f"  {member.size:>8}  {member.name}")


def _prepare_download(cp: ControlPlane, netns: NetworkNamespace | None) -> None:
    """The download API's Service and roles; with a network namespace, its APIService too."""
    kubeconfig = cp.kubeconfig
    _kubectl(kubeconfig, "create", "namespace", SYSTEM)
    files = ["service.yaml", "access-role.yaml"] + (["apiservice.yaml"] if netns is not None else [])
    for name in files:
        _kubectl(kubeconfig, "apply", "-f", str(DOWNLOAD / name))


def _expose(cp: ControlPlane, netns: NetworkNamespace, port: int, timeout: float = 60) -> None:
    """The Service's endpoint on the veth's host address, then wait for the APIService to be Available."""
    with cp.api_client() as api:
        endpoint_slice(api, SYSTEM, "projectgen-api", netns.host_address, port)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = _kubectl(
            cp.kubeconfig,
            "get",
            "apiservice",
            "v1alpha1.download.projectgen.io",
            "-o",
            "jsonpath={.status.conditions[?(@.type=='Available')].status}",
            check=False,
        )
        if out.strip() == "True":
            return
        time.sleep(0.5)
    raise RuntimeError(f"the download APIService did not become Available (KUBECONFIG={cp.kubeconfig})")


def _tenant(cp: ControlPlane) -> Path:
    """A user with `view` in the demo namespace: nothing in projectgen-system, no exec anywhere."""
    with cp.api_client() as api:
        aggregate_cluster_roles(api)  # what kube-controller-manager would do for view/edit/admin
    _kubectl(
        cp.kubeconfig,
        "create",
        "rolebinding",
        f"{TENANT}-view",
        "-n",
        NAMESPACE,
        "--clusterrole=view",
        f"--user={TENANT}",
    )
    return cp.user_kubeconfig(TENANT, ["demo-team"])


def _check(data: bytes, expected: str, how: str) -> bool:
    digest = hashlib.sha256(data).hexdigest()
    verdict = "matches" if digest == expected else f"DOES NOT MATCH {expected}"
    _say(f"{how}: {len(data)} bytes, SHA-256 {digest} {verdict} status.archiveSha256")
    return digest == expected


def _download(cp: ControlPlane, netns: NetworkNamespace | None, serving_port: int, workdir: Path) -> bool:
    export = json.loads(_kubectl(cp.kubeconfig, "get", "rexp", ZIP_EXPORT, "-n", NAMESPACE, "-o", "json"))
    status = export["status"]
    path, expected = status["downloadPath"], status["archiveSha256"]
    tenant = _tenant(cp)
    if netns is None:
        why = netns_unavailable() or "--no-netns"
        _say(
            f"not through kube-apiserver: {why}, and an APIService's endpoint may not be a "
            "loopback address; asking the operator's download server directly with the front-proxy "
            "certificate, as kube-apiserver would (same authentication and SubjectAccessReview)"
        )
        ca = json.loads(
            _kubectl(cp.kubeconfig, "get", "secret", "projectgen-serving-ca", "-n", SYSTEM, "-o", "json")
        )
        context = ssl.create_default_context(cadata=base64.b64decode(ca["data"]["ca.crt"]).decode())
        context.load_cert_chain(str(cp.front_proxy.cert), str(cp.front_proxy.key))
        request = urllib.request.Request(
            f"https://127.0.0.1:{serving_port}{path}",
            headers={"X-Remote-User": TENANT, "X-Remote-Group": "demo-team"},
        )
        with urllib.request.urlopen(request, context=context, timeout=30) as resp:  # noqa: S310
            data = resp.read()
        return _check(data, expected, f"GET https://127.0.0.1:{serving_port}{path} as {TENANT}")
    print(f"\n$ kubectl get --raw {path} > billing-api.zip     # as {TENANT} (view in {NAMESPACE})")
    raw = subprocess.run(
        ["kubectl", f"--kubeconfig={tenant}", "get", "--raw", path],
        capture_output=True,
        check=False,
        timeout=60,
    )
    if raw.returncode != 0:
        _say(f"kubectl get --raw failed: {raw.stderr.decode(errors='replace')}")
        return False
    (workdir / "billing-api.zip").write_bytes(raw.stdout)
    ok = _check(raw.stdout, expected, "kubectl get --raw")
    print(f"\n$ projectgen download rexp/{ZIP_EXPORT} -n {NAMESPACE} -o {workdir / 'downloaded.zip'}")
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "projectgen",
            "download",
            f"rexp/{ZIP_EXPORT}",
            "-n",
            NAMESPACE,
            "-o",
            str(workdir / "downloaded.zip"),
        ],
        env={**os.environ, "KUBECONFIG": str(tenant)},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    print(cli.stderr.strip())
    return ok and cli.returncode == 0


def demo_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m projectgen_dev demo", description=__doc__)
    parser.add_argument("--keep", action="store_true", help="leave everything running (print KUBECONFIG)")
    parser.add_argument("--data-dir", type=Path, help="operator volume (default: a temporary directory)")
    parser.add_argument("--timeout", type=int, default=180, help="seconds to wait for Ready")
    parser.add_argument(
        "--no-netns",
        action="store_true",
        help="download from the operator's port directly, as without root (no network namespace)",
    )
    args = parser.parse_args(argv)

    _say("finding kube-apiserver and etcd (the first run builds them from the Go module proxy: minutes)")
    binaries = find_binaries()
    workdir = Path(tempfile.mkdtemp(prefix="projectgen-demo-"))
    data_dir = args.data_dir or workdir / "data"
    token = "demo_" + secrets.token_hex(16)
    operator: subprocess.Popen[bytes] | None = None
    ok = False
    netns = NetworkNamespace() if netns_unavailable() is None and not args.no_netns else None
    with (
        contextlib.ExitStack() as stack,
        ControlPlane(binaries) as cp,
        FakeGitHub(tokens={token}, user="demo-user", orgs=["acme"]) as github,
    ):
        if netns is not None:
            stack.enter_context(netns)
        kubeconfig = cp.kubeconfig
        _say(f"control plane ready at {cp.url}")
        cp.install(REPO_ROOT / "crds", REPO_ROOT / "manifests" / "created-by")
        _say(f"GitHub API stand-in at {github.api_url}")
        port, metrics_port, serving_port = _free_port(), _free_port(), _free_port()
        _prepare_download(cp, netns)
        log_path = workdir / "operator.log"
        # The GitHub stand-in listens on loopback: the demo's policy allows it, as an admin would.
        policy = workdir / "policy.yaml"
        policy.write_text(
            'forges: [{urlPrefix: "https://"}, {urlPrefix: "http://127.0.0.1:"}]\ninternal: [{cidr: 127.0.0.0/8}]\n'
        )
        env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "PROJECTGEN_DATA_DIR": str(data_dir),
            "PROJECTGEN_POLICY_FILE": str(policy),
            "PROJECTGEN_SERVING_PORT": str(serving_port),
            "PROJECTGEN_OPERATOR_NAMESPACE": SYSTEM,
            "PROJECTGEN_SERVING_NAMES": ",".join(["127.0.0.1", *([netns.host_address] if netns else [])]),
        }
        with open(log_path, "ab") as log:
            operator = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "projectgen",
                    "run",
                    "--log-format=plain",
                    f"--liveness-port={port}",
                    f"--metrics-port={metrics_port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        try:
            for _ in range(300):
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                        break
                except OSError:
                    if operator.poll() is not None:
                        raise RuntimeError(f"the operator exited; see {log_path}") from None
                    time.sleep(0.2)
            _say(
                f"operator running (data directory {data_dir}, log {log_path}, "
                f"metrics http://127.0.0.1:{metrics_port}/metrics)"
            )
            if netns is not None:
                _expose(cp, netns, serving_port)
                _say(
                    f"download API served through kube-apiserver (operator at {netns.host_address}:{serving_port})"
                )
            _kubectl(kubeconfig, "create", "namespace", NAMESPACE)
            objects = _sample_objects(github.api_url, token)
            _kubectl(kubeconfig, "apply", "-f", "-", input=yaml.safe_dump_all(objects))
            _say("applied the samples; waiting for them to be Ready")
            ok = _wait_ready(kubeconfig, ["generatedprojects,repositoryexports", "--all"], args.timeout)
            print()
            print(
                _kubectl(
                    kubeconfig, "get", "-n", NAMESPACE, "generatedprojects,repositoryexports", "-o", "wide"
                )
            )
            if ok:
                _show_archives(kubeconfig)
                print(f"\nrepositories created on the GitHub stand-in: {', '.join(github.created) or 'none'}")
                ok = _download(cp, netns, serving_port, workdir)
            else:
                print(
                    _kubectl(
                        kubeconfig,
                        "get",
                        "-n",
                        NAMESPACE,
                        "generatedprojects,repositoryexports",
                        "-o",
                        "custom-columns=NAME:.metadata.name,MESSAGE:.status.errorMessage",
                    )
                )
                _say(f"not everything became Ready; operator log: {log_path}")
            if args.keep:
                print(f"\nexport KUBECONFIG={kubeconfig}\n")
                _say("running; press Ctrl-C to stop")
                stop = threading.Event()
                signal.signal(signal.SIGTERM, lambda *_: stop.set())
                with contextlib.suppress(KeyboardInterrupt):
                    stop.wait()
        finally:
            if operator and operator.poll() is None:
                operator.send_signal(signal.SIGTERM)
                try:
                    operator.wait(30)
                except subprocess.TimeoutExpired:
                    operator.kill()
            _say("stopping")
    _say(f"{'done' if ok else 'failed'}; archives and the operator log stay in {workdir}")
    return 0 if ok else 1
