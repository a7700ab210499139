"""The download API's decisions without a cluster, and its streaming on a real TLS server on loopback.

The SubjectAccessReview and the aggregator's side need kube-apiserver:
tests/integration/test_download_api.py.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ssl
import tracemalloc
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from projectgen.serving import download
from projectgen.serving.auth import Authenticator, RequestHeaderConfig, Unauthenticated
from projectgen.serving.download import Located, NotServable, Unsatisfiable, locate, parse_range
from projectgen.serving.server import forwarded_headers
from projectgen.serving.tls import (
    SHARD_PROXY_CN,
    CABundleTarget,
    CertificateAuthority,
    ServingIdentity,
    new_ca,
)
from projectgen.storage import Storage

# -- Range ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 10, None),
        ("", 10, None),
        ("bytes=0-", 10, (0, 9)),
        ("bytes=3-5", 10, (3, 5)),
        ("bytes=3-50", 10, (3, 9)),  # clamped to the end
        ("bytes=-4", 10, (6, 9)),  # the last 4
        ("bytes=-40", 10, (0, 9)),
        ("bytes=5-3", 10, None),  # invalid: ignored, the whole file
        ("bytes=0-1,4-5", 10, None),  # several ranges: the whole file
        ("items=0-1", 10, None),
        ("bytes=-", 10, None),
    ],
)
def test_parse_range(header: str | None, size: int, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(
    ("header", "size"),
    [
        ("bytes=10-", 10),
        ("bytes=11-12", 10),
        ("bytes=-0", 10),
        ("bytes=0-", 0),
        ("bytes=" + "9" * 5000 + "-", 10),  # past Python's int digit limit: still just past the end
        ("bytes=" + "1" + "0" * 18 + "-" + "2" * 30, 10),
    ],
)
def test_unsatisfiable_ranges(header: str, size: int) -> None:
    with pytest.raises(Unsatisfiable):
        parse_range(header, size)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=2-" + "9" * 5000, (2, 9)),  # a last position past the end: the rest of the file
        ("bytes=-" + "9" * 5000, (0, 9)),  # a suffix longer than the file: all of it
        ("bytes=" + "0" * 5000 + "3-4", (3, 4)),  # leading zeros are not a large number
        ("bytes=\u0663-", None),  # a non-ASCII digit (int() takes it) is no byte range
    ],
)
def test_long_range_positions_are_compared_not_converted(
    header: str, expected: tuple[int, int] | None
) -> None:
    assert parse_range(header, 10) == expected


# -- which file ------------------------------------------------------------------------------------


def _export(status: dict[str, Any], export_type: str = "zip") -> dict[str, Any]:
    return {
        "metadata": {"namespace": "team-a", "name": "e", "uid": "u-1", "generation": 2},
        "spec": {"exportType": export_type, "generatedProjectRef": {"name": "p"}},
        "status": {"observedGeneration": 2, **status},
    }


def test_locate_serves_only_the_exports_own_file(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "data")
    archive = storage.export_path("team-a", "e", "u-1", "p.zip")
    archive.write_bytes(b"PK")
    found = locate(
        _export({"phase": "Completed", "archivePath": str(archive), "archiveSha256": "ab" * 32}), storage
    )
    assert found == Located(archive, "ab" * 32, "p.zip")

    # A status naming a file elsewhere: only its name counts, looked up in the export's own directory.
    elsewhere = tmp_path / "secret.zip"
    elsewhere.write_bytes(b"secret")
    with pytest.raises(NotServable) as excinfo:
        locate(_export({"phase": "Completed", "archivePath": str(elsewhere)}), storage)
    assert excinfo.value.code == 409 and "not on this operator's volume" in excinfo.value.message
    with pytest.raises(NotServable) as excinfo:
        locate(_export({"phase": "Completed", "archivePath": "/x/.."}), storage)
    assert excinfo.value.code == 500


def test_locate_refuses_what_is_not_a_completed_archive(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "data")
    with pytest.raises(NotServable) as excinfo:
        locate(
            _export(
                {
                    "phase": "Pending",
                    "conditions": [{"type": "Ready", "status": "False", "message": "waiting for p"}],
                }
            ),
            storage,
        )
    assert (excinfo.value.code, excinfo.value.message) == (
        409,
        "RepositoryExport team-a/e is Pending, not Completed: waiting for p",
    )
    stale = _export({"phase": "Completed", "archivePath": "/a/p.zip"})
    stale["metadata"]["generation"] = 3  # a new spec not reconciled yet: the old archive is not it
    with pytest.raises(NotServable) as excinfo:
        locate(stale, storage)
    assert excinfo.value.code == 409
    with pytest.raises(NotServable) as excinfo:
        locate(_export({"phase": "Completed"}, export_type="github"), storage)
    assert excinfo.value.code == 409 and "publishes a repository" in excinfo.value.message


def test_errors_are_status_objects_worded_as_the_api_server_does() -> None:
    body = download.status_body(404, 'repositoryexports.projectgen.io "x" not found', name="x")
    assert body["kind"] == "Status" and body["status"] == "Failure" and body["reason"] == "NotFound"
    user = download.User("alice", groups=("g",))
    assert download.forbidden_message(user, "team-b", "x", "") == (
        'repositoryexports.download.projectgen.io "x" is forbidden: User "alice" cannot get resource '
        '"repositoryexports/archive" in API group "download.projectgen.io" in the namespace "team-b"'
    )


def test_discovery_names_the_archive_subresource() -> None:
    resources = {r["name"]: r for r in download.api_resource_list()["resources"]}
    assert resources["repositoryexports/archive"]["verbs"] == ["get"]
    assert resources["repositoryexports"]["verbs"] == []  # only the subresource is served
    assert (
        download.api_group_list()["groups"][0]["preferredVersion"]["groupVersion"] == download.GROUP_VERSION
    )


# -- who is asking ---------------------------------------------------------------------------------


def _der(pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def cas() -> dict[str, CertificateAuthority]:
    return {name: CertificateAuthority(*new_ca(name)) for name in ("front-proxy", "own", "rogue")}


def test_authenticator_accepts_only_the_front_proxy_and_the_shards(
    cas: dict[str, CertificateAuthority],
) -> None:
    config = RequestHeaderConfig.from_configmap_data(
        {
            "requestheader-client-ca-file": cas["front-proxy"].cert_pem.decode(),
            "requestheader-allowed-names": '["front-proxy-client"]',
            "requestheader-username-headers": '["X-Remote-User"]',
            "requestheader-group-headers": '["X-Remote-Group"]',
            "requestheader-extra-headers-prefix": '["X-Remote-Extra-"]',
        }
    )
    auth = Authenticator(config, cas["own"].cert_pem)
    headers = {"X-Remote-User": "alice", "X-Remote-Group": "devs", "X-Remote-Extra-Scopes%2fA": "s1"}

    proxy, _ = cas["front-proxy"].issue("front-proxy-client", client=True)
    user = auth.authenticate(_der(proxy), headers)
    assert (user.name, user.groups, dict(user.extra), user.via) == (
        "alice",
        ("devs",),
        {"scopes/a": ("s1",)},
        "front-proxy",
    )

    shard, _ = cas["own"].issue(SHARD_PROXY_CN, client=True)
    assert auth.authenticate(_der(shard), headers).via == "shard"

    for pem, why in (
        (cas["front-proxy"].issue("someone-else", client=True)[0], "requestheader-allowed-names"),
        (cas["own"].issue("front-proxy-client", client=True)[0], "not signed by the requestheader CA"),
        (cas["rogue"].issue("front-proxy-client", client=True)[0], "not signed by the requestheader CA"),
    ):
        with pytest.raises(Unauthenticated, match=why):
            auth.authenticate(_der(pem), headers)
    with pytest.raises(Unauthenticated, match="no client certificate"):
        auth.authenticate(None, headers)
    with pytest.raises(Unauthenticated, match="no user"):
        auth.authenticate(_der(proxy), {"X-Remote-Group": "devs"})


def test_forwarded_headers_are_what_the_receiving_shard_reads(cas: dict[str, CertificateAuthority]) -> None:
    config = RequestHeaderConfig(cas["front-proxy"].cert_pem)
    user = download.User("bob", "", ("g1", "g2"), {"scopes/a": ("s1", "s2")})
    headers = forwarded_headers(user, config)
    shard, _ = cas["own"].issue(SHARD_PROXY_CN, client=True)
    again = Authenticator(config, cas["own"].cert_pem).authenticate(_der(shard), headers)
    assert (again.name, again.groups, dict(again.extra)) == ("bob", ("g1", "g2"), {"scopes/a": ("s1", "s2")})


# -- caBundles -------------------------------------------------------------------------------------


def test_ca_bundle_patches() -> None:
    bundle = b"-----BEGIN CERTIFICATE-----\n"
    encoded = base64.b64encode(bundle).decode()
    apiservice = CABundleTarget.apiservice("v1alpha1.download.projectgen.io")
    assert apiservice.patch_for({"spec": {}}, bundle) == {"spec": {"caBundle": encoded}}
    assert apiservice.patch_for({"spec": {"caBundle": encoded}}, bundle) is None
    webhook = CABundleTarget.mutating_webhook("projectgen-created-by")
    obj = {
        "metadata": {"resourceVersion": "7"},
        "webhooks": [
            {"name": "a", "clientConfig": {"service": {"name": "s"}}},
            {"name": "b", "clientConfig": {}},
        ],
    }
    patch = webhook.patch_for(obj, bundle)
    assert patch is not None and patch["metadata"] == {"resourceVersion": "7"}
    assert [w["clientConfig"] for w in patch["webhooks"]] == [
        {"service": {"name": "s"}, "caBundle": encoded},
        {"caBundle": encoded},
    ]
    assert webhook.patch_for({**obj, "webhooks": patch["webhooks"]}, bundle) is None


def test_admin_supplied_certificates_are_reloaded_when_they_change(
    cas: dict[str, CertificateAuthority], tmp_path: Path
) -> None:
    cert, key = cas["own"].issue("projectgen-api", server_names=["projectgen-api.ns.svc"])
    (tmp_path / "tls.crt").write_bytes(cert)
    (tmp_path / "tls.key").write_bytes(key)
    identity = ServingIdentity.from_dir(tmp_path)
    assert identity.ca_bundle is None  # no ca.crt: the caBundle is someone else's (cainjector)
    assert not identity.changed_on_disk()
    (tmp_path / "ca.crt").write_bytes(cas["own"].cert_pem)
    assert identity.changed_on_disk()
    assert ServingIdentity.from_dir(tmp_path).ca_bundle == cas["own"].cert_pem


# -- streaming on a real TLS server ---------------------------------------------------------------


def test_stream_is_flat_in_memory_and_honours_range(
    cas: dict[str, CertificateAuthority], tmp_path: Path
) -> None:
    """64 MiB through TLS on loopback; the traced allocations stay a few chunks wide."""
    size = 64 << 20
    archive = tmp_path / "big.zip"
    block = hashlib.sha256(b"seed").digest() * (1 << 15)  # 1 MiB, not compressible to nothing
    with archive.open("wb") as fh:
        for _ in range(size // len(block)):
            fh.write(block)
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    located = Located(archive, sha, "big.zip")
    identity = ServingIdentity.from_ca(cas["own"], ["127.0.0.1"])

    async def handler(request: web.Request) -> web.StreamResponse:
        return await download.stream_file(request, located)

    async def run() -> tuple[int, str, int, bytes, int]:
        app = web.Application()
        app.router.add_get("/a", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=identity.server_context([]))
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        client_ctx = ssl.create_default_context(cadata=cas["own"].cert_pem.decode())
        try:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_ctx)) as session:
                tracemalloc.start()
                hasher, total = hashlib.sha256(), 0
                async with session.get(f"https://127.0.0.1:{port}/a") as resp:
                    etag = resp.headers["ETag"]
                    async for chunk in resp.content.iter_chunked(1 << 16):
                        hasher.update(chunk)
                        total += len(chunk)
                _, peak = tracemalloc.get_traced_memory()
                tracemalloc.stop()
                async with session.get(
                    f"https://127.0.0.1:{port}/a", headers={"Range": f"bytes={size - 5}-"}
                ) as resp:
                    tail, tail_status = await resp.read(), resp.status
                assert hasher.hexdigest() == sha and total == size
                return peak, etag, tail_status, tail, total
        finally:
            await runner.cleanup()

    peak, etag, tail_status, tail, _ = asyncio.run(run())
    assert etag == f'"{sha}"'
    assert tail_status == 206 and tail == archive.read_bytes()[-5:]
    print(f"peak traced memory while streaming 64 MiB: {peak / (1 << 20):.2f} MiB")
    assert peak < 8 << 20, f"peak traced memory {peak / (1 << 20):.1f} MiB for a 64 MiB archive"
