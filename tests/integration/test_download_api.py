"""The download API through the real aggregation layer: kube-apiserver authenticates alice and bob
(client certificates), checks RBAC, and proxies to the operator, which checks the front-proxy
certificate and asks a SubjectAccessReview.

Its own control plane, in a network namespace (module-scoped): kube-apiserver dials the
APIService's endpoint, and EndpointSlices refuse loopback addresses. Two operator shards run in
that namespace, each with its own data directory; the APIService's one endpoint is shard a, so
every download of team-b's export (shard b) is forwarded by shard a to shard b.

No kube-controller-manager runs: :mod:`projectgen_dev.aggregation` writes the EndpointSlice and
folds the ``aggregate-to-*`` ClusterRoles into view/edit/admin, as its controllers would.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from support import (
    EXPORTS,
    PROJECTS,
    OperatorProcess,
    create,
    ensure_namespace,
    export_body,
    free_port,
    inline_source,
    project_body,
    wait_for,
    wait_phase,
)

from projectgen.serving import tls
from projectgen.serving.download import GROUP, download_path
from projectgen_dev import pki
from projectgen_dev.aggregation import aggregate_cluster_roles, endpoint_slice
from projectgen_dev.ci import unavailable
from projectgen_dev.controlplane import BinariesNotFoundError, ControlPlane, find_binaries
from projectgen_dev.netns import NetworkNamespace

REPO_ROOT = Path(__file__).resolve().parents[2]
SYSTEM = "projectgen-system"
APISERVICE = f"v1alpha1.{GROUP}"
ALICE, BOB = "alice", "bob"
REQUEST_TIMEOUT = 5
PER_USER = 2


@dataclass
class Cluster:
    cp: ControlPlane
    ns: NetworkNamespace
    api: client.ApiClient
    shards: dict[str, OperatorProcess]
    alice: Path
    bob: Path

    def kubectl(self, kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["kubectl", f"--kubeconfig={kubeconfig}", *args], capture_output=True, check=False, timeout=60
        )

    def user_pool(self, user: str, receive_buffer: int = 0) -> urllib3.PoolManager:
        """A client with ``user``'s certificate; ``receive_buffer``: a fixed SO_RCVBUF (no autotuning,
        so what the kernel holds for a slow reader stays small)."""
        pair = self.cp.user_credentials(user, ["team-devs"])
        options = [(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)] if receive_buffer else None
        return urllib3.PoolManager(
            cert_reqs="CERT_REQUIRED",
            ca_certs=str(self.cp.ca_file),
            cert_file=str(pair.cert),
            key_file=str(pair.key),
            socket_options=options,
        )


@pytest.fixture(scope="module")
def cluster(
    network_namespace: NetworkNamespace, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    try:
        bin_dir = find_binaries()
    except BinariesNotFoundError as exc:
        unavailable(f"control plane binaries unavailable: {exc}")
    ns = network_namespace
    # kube-apiserver ends a proxied aggregated request after --request-timeout (60 s by default); 5 s
    # here, so a download that outlasts it takes seconds instead of minutes.
    with (
        ControlPlane(bin_dir, netns=ns, apiserver_args={"--request-timeout": f"{REQUEST_TIMEOUT}s"}) as cp,
        cp.api_client() as api,
    ):
        cp.install(REPO_ROOT / "crds")
        ensure_namespace(api, SYSTEM)
        subprocess.run(
            [
                "kubectl",
                f"--kubeconfig={cp.kubeconfig}",
                "apply",
                "-k",
                str(REPO_ROOT / "manifests" / "download"),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        ports = {"a": free_port(), "b": free_port()}
        endpoint_slice(api, SYSTEM, "projectgen-api", ns.address, ports["a"])
        urls = ",".join(f"{s}=https://{ns.address}:{p}" for s, p in ports.items())
        work = tmp_path_factory.mktemp("download-api")
        shards: dict[str, OperatorProcess] = {}
        try:
            for shard, port in ports.items():
                shards[shard] = OperatorProcess(
                    cp.kubeconfig,
                    work / f"data-{shard}",
                    work / f"operator-{shard}.log",
                    selector=f"projectgen.io/shard={shard}",
                    netns=ns,
                    env={
                        "PROJECTGEN_SERVING_PORT": str(port),
                        "PROJECTGEN_SERVING_NAMES": ns.address,
                        "PROJECTGEN_OPERATOR_NAMESPACE": SYSTEM,
                        "PROJECTGEN_SHARD": shard,
                        "PROJECTGEN_SHARD_URLS": urls,
                        "PROJECTGEN_DOWNLOADS_PER_USER": str(PER_USER),
                        "PROJECTGEN_SERVING_REFRESH_SECONDS": "2",
                    },
                ).start()
            _wait_available(api, shards)
            for name in ("team-a", "team-b"):
                ensure_namespace(api, name)
            aggregate_cluster_roles(api)
            rbac = client.RbacAuthorizationV1Api(api)
            for user, namespace, role in ((ALICE, "team-a", "edit"), (BOB, "team-b", "view")):
                rbac.create_namespaced_role_binding(
                    namespace,
                    {
                        "metadata": {"name": f"{user}-{role}"},
                        "roleRef": {
                            "apiGroup": "rbac.authorization.k8s.io",
                            "kind": "ClusterRole",
                            "name": role,
                        },
                        "subjects": [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}],
                    },
                )
            yield Cluster(
                cp,
                ns,
                api,
                shards,
                cp.user_kubeconfig(ALICE, ["team-devs"]),
                cp.user_kubeconfig(BOB, ["team-devs"]),
            )
        finally:
            lines = cp.apiserver_log.read_text(errors="replace").splitlines()
            noted = [
                line for line in lines if "download.projectgen.io" in line or "aggregator" in line.lower()
            ]
            print("--- kube-apiserver (aggregator lines)\n" + "\n".join(noted[-40:]), file=sys.stderr)
            for proc in shards.values():
                proc.stop()
                print(f"--- {proc.log_path}\n{proc.logs()[-6000:]}", file=sys.stderr)


def _wait_available(api: client.ApiClient, shards: dict[str, OperatorProcess], timeout: float = 60) -> None:
    custom = client.CustomObjectsApi(api)
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        obj = custom.get_cluster_custom_object("apiregistration.k8s.io", "v1", "apiservices", APISERVICE)
        last = (obj.get("status") or {}).get("conditions")
        if any(c["type"] == "Available" and c["status"] == "True" for c in last or []):
            try:
                client.CustomObjectsApi(api).get_api_resources(GROUP, "v1alpha1")
                return
            except ApiException as exc:
                last = f"discovery: HTTP {exc.status}"
        time.sleep(0.5)
    logs = "\n".join(p.logs()[-3000:] for p in shards.values())
    raise AssertionError(f"APIService not Available after {timeout}s: {last}\n{logs}")


def _export(
    cluster: Cluster, namespace: str, shard: str, name: str, export_type: str, files: int = 40
) -> dict[str, Any]:
    labels = {"projectgen.io/shard": shard}
    content = {f"src/file{i:03}.txt": f"{name} line {i}\n" * (i + 1) for i in range(files)}
    project = project_body(f"{name}-p", [inline_source(content)])
    project["metadata"]["labels"] = labels
    export = export_body(name, f"{name}-p", export_type)
    export["metadata"]["labels"] = labels
    for plural, body in ((PROJECTS, project), (EXPORTS, export)):
        try:
            create(cluster.api, plural, namespace, body)
        except ApiException as exc:
            if exc.status != 409:
                raise
    return wait_phase(cluster.api, EXPORTS, namespace, name, "Completed", timeout=90)


@pytest.fixture(scope="module")
def team_a_zip(cluster: Cluster) -> dict[str, Any]:
    return _export(cluster, "team-a", "a", "alice-zip", "zip")


@pytest.fixture(scope="module")
def team_b_tgz(cluster: Cluster) -> dict[str, Any]:
    return _export(cluster, "team-b", "b", "bob-tgz", "tar.gz")


def _url(cluster: Cluster, path: str) -> str:
    return cluster.cp.url + path


@pytest.mark.matrix
def test_apiservice_carries_the_operators_ca(cluster: Cluster) -> None:
    secret = client.CoreV1Api(cluster.api).read_namespaced_secret("projectgen-serving-ca", SYSTEM)
    obj = client.CustomObjectsApi(cluster.api).get_cluster_custom_object(
        "apiregistration.k8s.io", "v1", "apiservices", APISERVICE
    )
    assert obj["spec"]["caBundle"] == secret.data["ca.crt"]
    assert not obj["spec"].get("insecureSkipTLSVerify")


@pytest.mark.matrix
def test_discovery_lists_the_archive_subresource(cluster: Cluster) -> None:
    out = cluster.kubectl(cluster.alice, "get", "--raw", f"/apis/{GROUP}/v1alpha1")
    assert out.returncode == 0, out.stderr
    resources = {r["name"]: r["verbs"] for r in json.loads(out.stdout)["resources"]}
    assert resources["repositoryexports/archive"] == ["get"]


@pytest.mark.matrix
def test_alice_downloads_team_a_with_kubectl_get_raw(cluster: Cluster, team_a_zip: dict[str, Any]) -> None:
    path = team_a_zip["status"]["downloadPath"]
    assert path == download_path("team-a", "alice-zip")
    out = cluster.kubectl(cluster.alice, "get", "--raw", path)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout) == team_a_zip["status"]["archiveSize"]
    assert hashlib.sha256(out.stdout).hexdigest() == team_a_zip["status"]["archiveSha256"]
    assert out.stdout[:2] == b"PK"


def projectgen_download(kubeconfig: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`projectgen download` as a user runs it, with that user's kubeconfig."""
    return subprocess.run(
        [sys.executable, "-m", "projectgen", "download", *args],
        cwd=cwd,
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_alice_downloads_with_projectgen_download(
    cluster: Cluster, team_a_zip: dict[str, Any], tmp_path: Path
) -> None:
    proc = projectgen_download(cluster.alice, tmp_path, "rexp/alice-zip", "-n", "team-a")
    assert proc.returncode == 0, proc.stderr
    target = tmp_path / Path(team_a_zip["status"]["archivePath"]).name  # the Content-Disposition name
    assert hashlib.sha256(target.read_bytes()).hexdigest() == team_a_zip["status"]["archiveSha256"]
    assert "SHA-256 OK" in proc.stderr

    # A partial file is resumed with Range, and still checked whole.
    partial = tmp_path / "resumed.zip"
    partial.write_bytes(target.read_bytes()[:300])
    proc = projectgen_download(cluster.alice, tmp_path, "rexp/alice-zip", "-n", "team-a", "-o", str(partial))
    assert proc.returncode == 0, proc.stderr
    assert "resuming at byte 300" in proc.stderr
    assert partial.read_bytes() == target.read_bytes()

    # A complete file is checked, not fetched again.
    proc = projectgen_download(cluster.alice, tmp_path, "rexp/alice-zip", "-n", "team-a", "-o", str(partial))
    assert proc.returncode == 0 and "(already downloaded)" in proc.stderr, proc.stderr

    # A partial file that is not a prefix of the archive fails the check, saying so.
    wrong = tmp_path / "wrong.zip"
    wrong.write_bytes(b"X" * 300)
    proc = projectgen_download(cluster.alice, tmp_path, "rexp/alice-zip", "-n", "team-a", "-o", str(wrong))
    assert proc.returncode != 0
    assert "SHA-256 mismatch" in proc.stderr


@pytest.mark.matrix
def test_alice_is_forbidden_in_team_b(cluster: Cluster, team_b_tgz: dict[str, Any]) -> None:
    out = cluster.kubectl(cluster.alice, "get", "--raw", download_path("team-b", "bob-tgz"))
    assert out.returncode != 0
    assert b"forbidden" in out.stderr.lower() and b'"alice"' in out.stderr


def test_operator_authorizes_itself_with_a_subject_access_review(
    cluster: Cluster, team_b_tgz: dict[str, Any]
) -> None:
    """A request with a genuine front-proxy certificate still gets only what RBAC grants the user."""
    pool = _direct_pool(cluster, cluster.cp.front_proxy.cert, cluster.cp.front_proxy.key)
    url = f"https://{cluster.ns.address}:{cluster.shards['a'].serving_port}" + download_path(
        "team-b", "bob-tgz"
    )
    denied = pool.request("GET", url, headers={"X-Remote-User": ALICE, "X-Remote-Group": "team-devs"})
    assert denied.status == 403
    body = json.loads(denied.data)
    assert body["kind"] == "Status" and body["reason"] == "Forbidden"
    assert body["message"].startswith(
        f'repositoryexports.{GROUP} "bob-tgz" is forbidden: User "alice" cannot get resource '
        f'"repositoryexports/archive" in API group "{GROUP}" in the namespace "team-b"'
    )
    allowed = pool.request("GET", url, headers={"X-Remote-User": BOB, "X-Remote-Group": "team-devs"})
    assert allowed.status == 200
    assert hashlib.sha256(allowed.data).hexdigest() == team_b_tgz["status"]["archiveSha256"]


def test_bob_downloads_team_b_from_the_other_shard(cluster: Cluster, team_b_tgz: dict[str, Any]) -> None:
    out = cluster.kubectl(cluster.bob, "get", "--raw", team_b_tgz["status"]["downloadPath"])
    assert out.returncode == 0, out.stderr
    assert hashlib.sha256(out.stdout).hexdigest() == team_b_tgz["status"]["archiveSha256"]
    # Shard b holds it; the APIService's endpoint is shard a, which forwarded it.
    assert not (cluster.shards["a"].data_dir / "exports" / "team-b").exists()
    assert (cluster.shards["b"].data_dir / "exports" / "team-b" / "bob-tgz").is_dir()
    denied = cluster.kubectl(cluster.bob, "get", "--raw", download_path("team-a", "alice-zip"))
    assert denied.returncode != 0 and b"forbidden" in denied.stderr.lower()


def test_range_resumes_a_download(
    cluster: Cluster, team_a_zip: dict[str, Any], team_b_tgz: dict[str, Any]
) -> None:
    for user, export in ((ALICE, team_a_zip), (BOB, team_b_tgz)):  # local and forwarded
        pool = cluster.user_pool(user)
        url = _url(cluster, export["status"]["downloadPath"])
        whole = pool.request("GET", url)
        assert whole.status == 200
        sha = export["status"]["archiveSha256"]
        assert whole.headers["ETag"] == f'"{sha}"'
        assert (
            whole.headers["Content-Disposition"]
            == f'attachment; filename="{Path(export["status"]["archivePath"]).name}"'
        )
        size = len(whole.data)
        part = pool.request("GET", url, headers={"Range": "bytes=100-"})
        assert part.status == 206
        assert part.headers["Content-Range"] == f"bytes 100-{size - 1}/{size}"
        assert whole.data[:100] + part.data == whole.data
        assert hashlib.sha256(whole.data[:100] + part.data).hexdigest() == sha
        stale = pool.request("GET", url, headers={"Range": "bytes=100-", "If-Range": '"0000"'})
        assert stale.status == 200 and stale.data == whole.data  # another version: the whole file
        past = pool.request("GET", url, headers={"Range": f"bytes={size}-"})
        assert past.status == 416
        assert past.headers["Content-Range"] == f"bytes */{size}"


def test_export_not_completed_is_409(cluster: Cluster) -> None:
    export = export_body("waiting", "no-such-project", "zip")
    export["metadata"]["labels"] = {"projectgen.io/shard": "a"}
    create(cluster.api, EXPORTS, "team-a", export)
    wait_for(
        cluster.api,
        EXPORTS,
        "team-a",
        "waiting",
        lambda o: (o.get("status") or {}).get("phase") == "Pending",
        what="Pending",
    )
    response = cluster.user_pool(ALICE).request("GET", _url(cluster, download_path("team-a", "waiting")))
    assert response.status == 409
    body = json.loads(response.data)
    assert body["kind"] == "Status" and body["reason"] == "Conflict"
    assert "is Pending, not Completed" in body["message"] and "no-such-project" in body["message"]
    out = cluster.kubectl(cluster.alice, "get", "--raw", download_path("team-a", "waiting"))
    assert out.returncode != 0 and b"Pending, not Completed" in out.stderr


def test_unknown_export_is_404(cluster: Cluster) -> None:
    response = cluster.user_pool(ALICE).request("GET", _url(cluster, download_path("team-a", "nope")))
    assert response.status == 404
    body = json.loads(response.data)
    assert (
        body["reason"] == "NotFound" and body["message"] == 'repositoryexports.projectgen.io "nope" not found'
    )


def _direct_pool(cluster: Cluster, cert: Path | None = None, key: Path | None = None) -> urllib3.PoolManager:
    ca = client.CoreV1Api(cluster.api).read_namespaced_secret("projectgen-serving-ca", SYSTEM).data["ca.crt"]
    context = ssl.create_default_context(cadata=base64.b64decode(ca).decode())
    if cert is not None:
        context.load_cert_chain(str(cert), str(key))
    return urllib3.PoolManager(ssl_context=context, retries=False)


def _issue(ca_cert: Path, ca_key: Path, common_name: str, out: Path) -> tuple[Path, Path]:
    """A client certificate for `common_name` from the CA in those files, in `out`.crt|.key."""
    cert, key = tls.CertificateAuthority(ca_cert.read_bytes(), ca_key.read_bytes()).issue(
        common_name, client=True
    )
    cert_path, key_path = out.with_suffix(".crt"), out.with_suffix(".key")
    cert_path.write_bytes(cert)
    key_path.write_bytes(key)
    return cert_path, key_path


@pytest.mark.matrix
def test_requests_not_from_the_api_server_are_refused(
    cluster: Cluster, team_a_zip: dict[str, Any], tmp_path: Path
) -> None:
    url = f"https://{cluster.ns.address}:{cluster.shards['a'].serving_port}" + download_path(
        "team-a", "alice-zip"
    )
    headers = {"X-Remote-User": ALICE, "X-Remote-Group": "system:masters"}

    no_cert = _direct_pool(cluster).request("GET", url, headers=headers)
    assert no_cert.status == 401 and json.loads(no_cert.data)["reason"] == "Unauthorized"

    # Signed by the requestheader CA, but not a name in requestheader-allowed-names.
    cert_dir = cluster.cp.cert_dir
    cert, key = _issue(
        cert_dir / "front-proxy-ca.crt",
        cert_dir / "front-proxy-ca.key",
        "not-the-front-proxy",
        tmp_path / "np",
    )
    wrong_name = _direct_pool(cluster, cert, key).request("GET", url, headers=headers)
    assert wrong_name.status == 401
    assert "requestheader-allowed-names" in json.loads(wrong_name.data)["message"]

    # The right name, from a CA the cluster never heard of: refused in the TLS handshake.
    rogue = pki.CertificateAuthority(tmp_path, "rogue-ca").issue("rp", "front-proxy-client")
    cert, key = rogue.cert, rogue.key
    with pytest.raises(urllib3.exceptions.HTTPError):
        _direct_pool(cluster, cert, key).request("GET", url, headers=headers)


# -- long and many downloads -----------------------------------------------------------------------

BIG_PARTS, BIG_PART_BYTES = 7, 900_000


@pytest.fixture(scope="module")
def big_tar(cluster: Cluster) -> dict[str, Any]:
    """A 6 MB uncompressed tar on shard a (the APIService's endpoint): more than every buffer between
    the operator and a client holds, so a client that reads slowly is still reading when
    kube-apiserver's request timeout strikes."""
    core = client.CoreV1Api(cluster.api)
    for i in range(BIG_PARTS):
        try:
            core.create_namespaced_config_map(
                "team-a",
                {
                    "metadata": {"name": f"big-{i}"},
                    "data": {f"part{i}.txt": secrets.token_hex(BIG_PART_BYTES // 2)},
                },
            )
        except ApiException as exc:
            if exc.status != 409:
                raise
    project = project_body("big-p", [{"configMap": {"name": f"big-{i}"}} for i in range(BIG_PARTS)])
    project["metadata"]["labels"] = {"projectgen.io/shard": "a"}
    export = export_body("big", "big-p", "tar")
    export["metadata"]["labels"] = {"projectgen.io/shard": "a"}
    for plural, body in ((PROJECTS, project), (EXPORTS, export)):
        try:
            create(cluster.api, plural, "team-a", body)
        except ApiException as exc:
            if exc.status != 409:
                raise
    done = wait_phase(cluster.api, EXPORTS, "team-a", "big", "Completed", timeout=120)
    assert done["status"]["archiveSize"] > BIG_PARTS * BIG_PART_BYTES
    # TCP buffers in the namespace (kube-apiserver's side, and a client run inside it) autotune up
    # to a few hundred KiB instead of tens of MiB: the archive cannot sit whole in kernel buffers.
    subprocess.run(
        cluster.ns.wrap(
            [
                "sysctl",
                "-q",
                "-w",
                "net.ipv4.tcp_rmem=4096 65536 262144",
                "net.ipv4.tcp_wmem=4096 16384 262144",
            ]
        ),
        check=True,
        timeout=30,
    )
    return done


RATE = 512 * 1024
"""Bytes per second the slow client reads: the big archive takes about 12 s, over twice the timeout."""


def _read_slowly(read: Any, total: int) -> tuple[bytes, BaseException | None]:
    """Read up to ``total`` bytes with ``read(n)`` at :data:`RATE`; what arrived, and the error that
    ended it early (None: all of it)."""
    got, start = bytearray(), time.monotonic()
    while len(got) < total:
        try:
            chunk = read(64 * 1024)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            return bytes(got), exc
        if not chunk:
            break
        got += chunk
        time.sleep(max(0.0, start + len(got) / RATE - time.monotonic()))  # the throttle's pace
    return bytes(got), None if len(got) >= total else EOFError(f"{len(got)} of {total} bytes")


def test_a_download_that_outlasts_the_request_timeout_completes(
    cluster: Cluster, big_tar: dict[str, Any], tmp_path: Path
) -> None:
    size, sha = big_tar["status"]["archiveSize"], big_tar["status"]["archiveSha256"]
    path = big_tar["status"]["downloadPath"]

    # One GET read slowly: kube-apiserver ends it at its request timeout, mid-body. The archive
    # subresource is not one of its long-running kinds, and an aggregated API cannot declare one
    # (kubernetes/kubernetes#73421, #83200).
    pool = cluster.user_pool(ALICE, receive_buffer=64 * 1024)
    response = pool.request("GET", _url(cluster, path), preload_content=False)
    assert response.status == 200
    started = time.monotonic()
    first, error = _read_slowly(response.read, size)
    response.release_conn()
    assert error is not None and len(first) < size, "one response carried it all: nothing to prove"
    print(f"one GET: cut after {time.monotonic() - started:.1f}s at byte {len(first)} of {size}: {error!r}")

    # `projectgen download` (in the namespace: small buffers), its output read as slowly: it resumes
    # with Range where each response was cut, and the result is the archive.
    proc = subprocess.Popen(
        cluster.ns.wrap(
            [sys.executable, "-m", "projectgen", "download", "rexp/big", "-n", "team-a", "-o", "-"]
        ),
        env={**os.environ, "KUBECONFIG": str(cluster.alice)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    started = time.monotonic()
    data, error = _read_slowly(proc.stdout.read, size)
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0 and error is None, stderr
    assert time.monotonic() - started > 2 * REQUEST_TIMEOUT
    assert hashlib.sha256(data).hexdigest() == sha
    assert "resuming at byte" in stderr and f"SHA-256 OK: {sha}" in stderr
    print(stderr)


def test_downloads_past_the_bound_are_429_with_retry_after(cluster: Cluster, big_tar: dict[str, Any]) -> None:
    pool = cluster.user_pool(ALICE, receive_buffer=64 * 1024)
    url = _url(cluster, big_tar["status"]["downloadPath"])
    running = [pool.request("GET", url, preload_content=False) for _ in range(PER_USER)]
    try:
        assert [r.status for r in running] == [200] * PER_USER  # held open: alice reads nothing
        refused = pool.request("GET", url, retries=False)  # urllib3 would wait Retry-After and retry
        assert refused.status == 429, refused.data[:300]
        assert int(refused.headers["Retry-After"]) > 0
        body = json.loads(refused.data)
        assert body["kind"] == "Status" and body["reason"] == "TooManyRequests"
        assert f"PROJECTGEN_DOWNLOADS_PER_USER={PER_USER}" in body["message"]
        # Another user is not held up by alice's downloads.
        other = cluster.user_pool(BOB).request("GET", url)
        assert other.status == 403  # bob's RBAC, not alice's bound, decides
    finally:
        for r in running:
            r.release_conn()


def test_a_recreated_ca_secret_is_followed_by_every_shard(
    cluster: Cluster, team_b_tgz: dict[str, Any]
) -> None:
    """Last in the module: the serving CA is replaced. Both shards move to the new CA, the
    APIService's caBundle follows, and forwarding from shard a to shard b works with it."""
    core = client.CoreV1Api(cluster.api)
    core.delete_namespaced_secret("projectgen-serving-ca", SYSTEM)
    cert, key = tls.new_ca("replaced serving CA")
    core.create_namespaced_secret(
        SYSTEM,
        {
            "metadata": {"name": "projectgen-serving-ca"},
            "data": {"ca.crt": base64.b64encode(cert).decode(), "ca.key": base64.b64encode(key).decode()},
        },
    )
    deadline = time.monotonic() + 60
    bundle = ""
    while time.monotonic() < deadline:
        obj = client.CustomObjectsApi(cluster.api).get_cluster_custom_object(
            "apiregistration.k8s.io", "v1", "apiservices", APISERVICE
        )
        bundle = obj["spec"].get("caBundle", "")
        if bundle == base64.b64encode(cert).decode():
            out = cluster.kubectl(cluster.bob, "get", "--raw", team_b_tgz["status"]["downloadPath"])
            if out.returncode == 0:
                assert hashlib.sha256(out.stdout).hexdigest() == team_b_tgz["status"]["archiveSha256"]
                return
        time.sleep(1)
    logs = "\n".join(p.logs()[-3000:] for p in cluster.shards.values())
    raise AssertionError(f"the shards did not follow the new CA (caBundle now {bundle[:40]}...)\n{logs}")
