"""The HTTPS port under hostile and long-lived use, on a real TLS server on loopback built as the
operator builds it (:func:`serving_runner`, :class:`TLSSite`): hostile URLs and Range headers,
download bounds, slow clients, webhook bodies, API calls that never answer, and certificates that
age. Through the real kube-apiserver: tests/integration/test_download_api.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import os
import socket
import ssl
import struct
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import kubernetes
import pytest
import urllib3
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from multidict import CIMultiDict
from yarl import URL

from projectgen.serving import admission, auth, download, tls
from projectgen.serving.auth import Authenticator, RequestHeaderConfig, User
from projectgen.serving.bounds import DownloadSlots
from projectgen.serving.download import DownloadAPI, Located, download_path, the_export
from projectgen.serving.server import Server, TLSSite, serving_names, serving_runner
from projectgen.serving.shards import ShardClient
from projectgen.serving.tls import SHARD_PROXY_CN, CertificateAuthority, ServingIdentity, new_ca
from projectgen.settings import Settings
from projectgen.storage import Storage

WAIT = 20.0
"""How long a test waits for what should happen within a fraction of a second: only a failure waits."""


@pytest.fixture(scope="module")
def cas() -> dict[str, CertificateAuthority]:
    return {name: CertificateAuthority(*new_ca(name)) for name in ("front-proxy", "own", "new-own")}


def _settings(tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(data_dir=tmp_path / "data", serving_port=0, **overrides)


@contextlib.asynccontextmanager
async def _serve(
    app: web.Application, settings: Settings, cas: dict[str, CertificateAuthority]
) -> AsyncIterator[int]:
    identity = ServingIdentity.from_ca(cas["own"], ["127.0.0.1"])
    runner = serving_runner(app, settings)
    await runner.setup()
    site = TLSSite(
        runner,
        0,
        identity.server_context([cas["front-proxy"].cert_pem]),
        settings.serving_header_timeout,
        host="127.0.0.1",
    )
    await site.start()
    try:
        yield site.port
    finally:
        await runner.cleanup()


def _client_context(cas: dict[str, CertificateAuthority], *, proxy: bool = True) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=cas["own"].cert_pem.decode())
    if proxy:
        cert, key = cas["front-proxy"].issue("front-proxy-client", client=True)
        cert_file, key_file = _memfiles(cert, key)
        context.load_cert_chain(cert_file, key_file)
    return context


def _memfiles(cert: bytes, key: bytes) -> tuple[str, str]:
    """Paths to the pair for load_cert_chain (the descriptors live as long as the test process)."""
    paths = []
    for data in (cert, key):
        fd = os.memfd_create("test-cert")
        os.write(fd, data)
        paths.append(f"/proc/{os.getpid()}/fd/{fd}")
    return paths[0], paths[1]


def _downloads(tmp_path: Path, cas: dict[str, CertificateAuthority], **fields: Any) -> DownloadAPI:
    """The download API as the operator builds it. Its API client points at a port where nothing
    listens: a request these tests expect to be refused early never gets as far as asking."""
    configuration = kubernetes.client.Configuration()
    configuration.host = f"http://127.0.0.1:{_closed_port()}"
    configuration.retries = False
    authenticator = Authenticator(RequestHeaderConfig(cas["front-proxy"].cert_pem), cas["own"].cert_pem)
    return DownloadAPI(
        kubernetes.client.ApiClient(configuration), Storage(tmp_path / "data"), authenticator, **fields
    )


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _app(downloads: DownloadAPI) -> web.Application:
    app = web.Application()
    download.add_routes(app, downloads)
    return app


# -- item 7: the namespace and name in the URL -----------------------------------------------------


HOSTILE = [
    ("..", "x"),
    (".", "x"),
    ("%2e%2e", "x"),
    ("a%2Fb", "x"),
    ("Team-A", "x"),
    ("-a", "x"),
    ("a" * 64, "x"),
    ("a.b", "x"),  # a valid object name, not a valid namespace
    ("a%00", "x"),
    ("%C3%A9", "x"),
    ("team-a", ".."),
    ("team-a", "%2e%2e"),
    ("team-a", "a%2Fb"),
    ("team-a", "a..b"),
    ("team-a", "UP"),
    ("team-a", "x" * 254),
    ("team-a", "a%20b"),
]


def test_hostile_namespaces_and_names_are_refused_before_any_api_call(
    cas: dict[str, CertificateAuthority], tmp_path: Path
) -> None:
    downloads = _downloads(tmp_path, cas)

    async def run() -> list[tuple[str, int, dict[str, Any]]]:
        answers = []
        async with (
            _serve(_app(downloads), _settings(tmp_path), cas) as port,
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=_client_context(cas))) as session,
        ):
            for namespace, name in HOSTILE:
                path = (
                    f"/apis/{download.GROUP}/v1alpha1/namespaces/{namespace}/repositoryexports/{name}/archive"
                )
                url = URL(f"https://127.0.0.1:{port}{path}", encoded=True)  # sent as written
                async with session.get(url, headers={"X-Remote-User": "alice"}) as resp:
                    answers.append((path, resp.status, await resp.json(content_type=None)))
        return answers

    for path, status, body in asyncio.run(run()):
        assert status == 400, (path, status, body)
        assert body["kind"] == "Status" and body["reason"] == "BadRequest", body
        assert body["message"].startswith(("invalid namespace", "invalid name")), body


def test_only_the_export_asked_for_is_served() -> None:
    """Whatever the list answered, an item of another namespace or name is not this export."""
    other_ns = {"metadata": {"namespace": "team-b", "name": "e"}}
    other_name = {"metadata": {"namespace": "team-a", "name": "f"}}
    wanted = {"metadata": {"namespace": "team-a", "name": "e"}}
    assert the_export([other_ns, other_name], "team-a", "e") is None
    assert the_export([other_ns, wanted], "team-a", "e") == wanted
    assert download.invalid_reference("team-a", "billing-api.zip") == ""


# -- item 6: a Range no int() can hold, through the server ----------------------------------------


def test_a_range_past_any_file_is_416_and_not_a_500(
    cas: dict[str, CertificateAuthority], tmp_path: Path
) -> None:
    archive = tmp_path / "a.zip"
    archive.write_bytes(b"PK" + bytes(100))
    located = Located(archive, "", "a.zip")

    async def handler(request: web.Request) -> web.StreamResponse:
        return await download.stream_file(request, located)

    app = web.Application()
    app.router.add_get("/a", handler)

    async def run() -> list[tuple[int, str, bytes]]:
        answers = []
        async with (
            _serve(app, _settings(tmp_path), cas) as port,
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=_client_context(cas, proxy=False))
            ) as session,
        ):
            for wanted in ("bytes=" + "9" * 5000 + "-", "bytes=-" + "9" * 5000):
                async with session.get(f"https://127.0.0.1:{port}/a", headers={"Range": wanted}) as resp:
                    answers.append((resp.status, resp.headers.get("Content-Range", ""), await resp.read()))
        return answers

    (past, past_range, body), (suffix, suffix_range, whole) = asyncio.run(run())
    assert past == 416 and past_range == "bytes */102"
    assert json.loads(body)["reason"] == "RequestedRangeNotSatisfiable"
    assert len(json.loads(body)["message"]) < 200  # the header is not echoed whole
    assert (suffix, suffix_range, whole) == (206, "bytes 0-101/102", archive.read_bytes())


# -- item 8: bounds, slow clients, webhook bodies, API timeouts -----------------------------------


def test_download_slots_bound_each_user_and_everyone() -> None:
    slots = DownloadSlots(total=3, per_user=2)
    assert slots.acquire("alice") == "" and slots.acquire("alice") == ""
    assert "PROJECTGEN_DOWNLOADS_PER_USER=2" in slots.acquire("alice")
    assert slots.acquire("bob") == ""
    assert "PROJECTGEN_DOWNLOADS_MAX" in slots.acquire("carol")
    slots.release("alice")
    assert slots.acquire("carol") == ""
    assert (slots.running("alice"), slots.running()) == (1, 3)


def test_a_download_past_the_bound_is_429_with_retry_after(
    cas: dict[str, CertificateAuthority], tmp_path: Path
) -> None:
    downloads = _downloads(tmp_path, cas, slots=DownloadSlots(total=8, per_user=1))
    assert downloads.slots.acquire("alice") == ""  # alice's one download is running

    async def run() -> tuple[int, str, dict[str, Any]]:
        async with (
            _serve(_app(downloads), _settings(tmp_path), cas) as port,
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=_client_context(cas))) as session,
        ):
            url = f"https://127.0.0.1:{port}" + download_path("team-a", "e")
            async with session.get(url, headers={"X-Remote-User": "alice"}) as resp:
                return resp.status, resp.headers.get("Retry-After", ""), await resp.json(content_type=None)

    status, retry_after, body = asyncio.run(run())
    assert status == 429 and int(retry_after) > 0
    assert body["reason"] == "TooManyRequests" and "PROJECTGEN_DOWNLOADS_PER_USER=1" in body["message"]
    assert downloads.slots.running("alice") == 1  # the refused request took none


def _tls_socket(port: int, cas: dict[str, CertificateAuthority]) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    return _client_context(cas, proxy=False).wrap_socket(raw, server_hostname="127.0.0.1")


def _closed_by_server(sock: socket.socket) -> bool:
    """True when the server closes the connection before WAIT seconds pass (reads until then)."""
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except (ConnectionError, ssl.SSLError):
        pass
    return True


def test_slow_handshakes_and_slow_headers_are_cut(
    cas: dict[str, CertificateAuthority], tmp_path: Path
) -> None:
    """Slowloris: a connection that never finishes its TLS handshake, or its request headers (a byte
    at a time, each well within any per-read timeout), is closed by the server."""
    settings = _settings(tmp_path, serving_header_timeout=0.5)
    results: dict[str, bool] = {}

    def clients(port: int) -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as silent:  # no ClientHello
            results["handshake"] = _closed_by_server(silent)
        with _tls_socket(port, cas) as slow:
            slow.sendall(b"GET /apis HTTP/1.1\r\nHost: x\r\nX-Dribble: ")
            closed = False
            for _ in range(int(WAIT / 0.1)):  # one byte of one header at a time: within every size limit
                try:
                    slow.sendall(b"x")
                except (ConnectionError, ssl.SSLError):
                    closed = True
                    break
                threading.Event().wait(0.1)  # the dribble's pace, not a synchronisation
            results["headers"] = closed or _closed_by_server(slow)

    async def run() -> None:
        async with _serve(web.Application(), settings, cas) as port:
            await asyncio.to_thread(clients, port)

    asyncio.run(run())
    assert results == {"handshake": True, "headers": True}


def _big_download(tmp_path: Path, idle_timeout: float) -> tuple[web.Application, asyncio.Event]:
    """An app serving a 64 MiB archive at /a, and an event set when its handler has returned."""
    archive = tmp_path / "big.zip"
    with archive.open("wb") as fh:
        fh.truncate(64 << 20)
    located = Located(archive, "", "big.zip")
    done = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        try:
            return await download.stream_file(request, located, idle_timeout=idle_timeout)
        finally:
            done.set()

    app = web.Application()
    app.router.add_get("/a", handler)
    return app, done


def _stalled_download(port: int, cas: dict[str, CertificateAuthority]) -> ssl.SSLSocket:
    """A GET whose client takes the response headers and then reads nothing (a small receive buffer,
    so the server's writes stall soon)."""
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.settimeout(WAIT)
    raw.connect(("127.0.0.1", port))
    sock = _client_context(cas, proxy=False).wrap_socket(raw, server_hostname="127.0.0.1")
    sock.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
    sock.recv(1024)
    return sock


def test_a_client_that_stops_reading_frees_its_download(
    cas: dict[str, CertificateAuthority], tmp_path: Path
) -> None:
    async def run() -> bool:
        app, done = _big_download(tmp_path, idle_timeout=0.5)
        async with _serve(app, _settings(tmp_path), cas) as port:
            sock = await asyncio.to_thread(_stalled_download, port, cas)
            with sock:
                try:
                    await asyncio.wait_for(done.wait(), WAIT)
                except TimeoutError:
                    return False
                return await asyncio.to_thread(_closed_by_server, sock)

    assert asyncio.run(run()), "a download whose client reads nothing kept running"


def test_a_client_that_goes_away_ends_its_download_without_an_error(
    cas: dict[str, CertificateAuthority], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What kube-apiserver does at its request timeout: the connection is reset mid-body. That is a
    client leaving, logged as such, not an error with a traceback."""

    async def run() -> bool:
        app, done = _big_download(tmp_path, idle_timeout=WAIT)
        async with _serve(app, _settings(tmp_path), cas) as port:
            sock = await asyncio.to_thread(_stalled_download, port, cas)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # a reset, unread data and all
            try:
                await asyncio.wait_for(done.wait(), WAIT)
            except TimeoutError:
                return False
            return True  # leaving _serve waits for aiohttp to finish the response: any error is logged

    with caplog.at_level("INFO"):
        assert asyncio.run(run())
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
    assert any("ended by the client" in r.getMessage() for r in caplog.records)


def _review(obj: Any) -> bytes:
    return json.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u-1",
                "operation": "CREATE",
                "resource": {"group": "projectgen.io", "resource": "generatedprojects"},
                "userInfo": {"username": "alice"},
                "object": obj,
            },
        }
    ).encode()


def test_webhook_bodies_are_parsed_off_the_loop_with_bounds(
    cas: dict[str, CertificateAuthority], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed_on: list[bool] = []
    loads = json.loads

    def recording_loads(text: Any, **kwargs: Any) -> Any:
        if b"AdmissionReview" in (text if isinstance(text, bytes) else str(text).encode()[:200]):
            parsed_on.append(threading.current_thread() is threading.main_thread())
        return loads(text, **kwargs)

    monkeypatch.setattr(json, "loads", recording_loads)
    deep: Any = {}
    for _ in range(admission.MAX_DEPTH + 1):
        deep = {"d": deep}
    bodies = {
        "ok": _review({"metadata": {"name": "p", "annotations": {"note": "[[[{{{ in a string"}}}),
        "big": _review({"metadata": {"name": "p", "annotations": {"note": "x" * (2 << 20)}}}),
        "deep": _review({"metadata": {"name": "p"}, "spec": deep}),
        "bomb": b'{"apiVersion": ' + b"[" * 100_000,
        "large": b" " * (admission.MAX_REVIEW_BYTES + 1),
    }

    async def run() -> dict[str, tuple[int, dict[str, Any]]]:
        app = web.Application()
        admission.add_routes(app, body_timeout=0.5)
        answers = {}
        async with (
            _serve(app, _settings(tmp_path), cas) as port,
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=_client_context(cas, proxy=False))
            ) as session,
        ):
            url = f"https://127.0.0.1:{port}{admission.PATH}"
            for key, body in bodies.items():
                async with session.post(url, data=body) as resp:
                    answers[key] = (resp.status, await resp.json(content_type=None))

            async def trickle() -> AsyncIterator[bytes]:
                yield b"{"
                await asyncio.Event().wait()  # the rest never comes

            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with asyncio.timeout(WAIT), session.post(url, data=trickle()) as resp:
                    answers["slow"] = (resp.status, await resp.json(content_type=None))
        return answers

    answers = asyncio.run(run())
    assert answers["ok"][0] == 200 and answers["ok"][1]["response"]["allowed"] is True
    assert answers["big"][0] == 200, answers["big"]  # arrives in many segments: all are read
    assert answers["deep"][0] == 400 and "nested deeper than" in answers["deep"][1]["message"]
    assert answers["bomb"][0] == 400 and "nested deeper than" in answers["bomb"][1]["message"]
    assert answers["large"][0] == 413
    assert answers.get("slow", (0, {}))[0] == 408
    assert parsed_on == [False, False], "an AdmissionReview was parsed on the event loop's thread"


@contextlib.contextmanager
def _silent_api_server() -> Iterator[kubernetes.client.ApiClient]:
    """An API server that accepts connections and never answers (the kernel completes the TCP
    handshake of a listening socket nobody accepts on)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        configuration = kubernetes.client.Configuration()
        configuration.host = f"http://127.0.0.1:{listener.getsockname()[1]}"
        configuration.retries = False
        with kubernetes.client.ApiClient(configuration) as api:
            yield api


def _within(seconds: float, call: Callable[[], Any]) -> tuple[bool, Any]:
    outcome: list[Any] = []

    def target() -> None:
        try:
            outcome.append(call())
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    return (not thread.is_alive()), (outcome[0] if outcome else None)


def test_api_calls_of_a_download_time_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "API_TIMEOUT", 0.5)
    monkeypatch.setattr(download, "API_TIMEOUT", 0.5)
    with _silent_api_server() as api:
        returned, decision = _within(
            WAIT,
            lambda: auth.authorize(
                api,
                User("alice"),
                verb="get",
                group=download.GROUP,
                resource="repositoryexports",
                subresource="archive",
                namespace="team-a",
                name="e",
            ),
        )
        assert returned, "the SubjectAccessReview waited for ever"
        assert decision.allowed is False and "did not answer in time" in decision.reason
        returned, outcome = _within(WAIT, lambda: download.find_export(api, "team-a", "e"))
        assert returned, "the export's list waited for ever"
        assert isinstance(outcome, urllib3.exceptions.HTTPError)


def test_api_calls_of_the_refresh_loop_time_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """The refresh that rotates certificates reads the CA Secret, the requestheader ConfigMap and
    the caBundle targets: a stalled API server fails each call in time (the loop logs and retries)
    instead of holding the loop, and with it every later rotation, for ever."""
    monkeypatch.setattr(auth, "API_TIMEOUT", 0.5)
    monkeypatch.setattr(tls, "API_TIMEOUT", 0.5)
    with _silent_api_server() as api:
        core = kubernetes.client.CoreV1Api(api)
        calls: dict[str, Callable[[], Any]] = {
            "the CA Secret": lambda: tls.ensure_ca(core, "projectgen-system"),
            "the requestheader ConfigMap": lambda: auth.read_requestheader_config(core),
            "the APIService caBundle": lambda: tls.sync_ca_bundle(
                api, tls.CABundleTarget.apiservice("v1alpha1.projectgen.io"), b"bundle"
            ),
        }
        for what, call in calls.items():
            returned, outcome = _within(WAIT, call)
            assert returned, f"reading {what} waited for ever"
            assert isinstance(outcome, Exception), f"reading {what} from a silent API server: {outcome!r}"


def test_a_long_operator_namespace_still_gets_a_serving_certificate(
    cas: dict[str, CertificateAuthority], tmp_path: Path
) -> None:
    """A 63-character namespace (the longest a label may be) makes the Service's DNS name longer
    than a certificate's CN may be: the certificate is still issued, and names the Service in its SANs."""
    namespace = "platform-" + "x" * 54
    names = serving_names(_settings(tmp_path, operator_namespace=namespace))
    identity = ServingIdentity.from_ca(cas["own"], names)
    sans = _cert(identity.cert_pem).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert f"projectgen-api.{namespace}.svc" in sans.value.get_values_for_type(x509.DNSName)


# -- item 5: the shard client certificate and the CA behind it ------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime.datetime.now(datetime.UTC)

    def __call__(self) -> datetime.datetime:
        return self.now


def _cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def test_the_shard_client_certificate_stays_valid_for_years(cas: dict[str, CertificateAuthority]) -> None:
    clock = FakeClock()

    async def run() -> list[tuple[datetime.datetime, x509.Certificate]]:
        client = ShardClient(cas["own"], clock)
        seen = []
        for _ in range(0, 3 * 365, 5):
            seen.append((clock.now, _cert(client.certificate())))
            clock.now += datetime.timedelta(days=5)
        await client.close()
        return seen

    seen = asyncio.run(run())
    for when, cert in seen:
        assert cert.not_valid_before_utc <= when < cert.not_valid_after_utc, f"expired on {when}"
    issued = {cert.serial_number for _, cert in seen}
    assert 10 < len(issued) < 40  # reissued before each expiry, not at every request


def _der(pem: bytes) -> bytes:
    return _cert(pem).public_bytes(serialization.Encoding.DER)


def test_a_recreated_ca_is_followed(cas: dict[str, CertificateAuthority], tmp_path: Path) -> None:
    """The CA Secret replaced (a new CA): the serving certificate, the caBundle, the shard client
    certificate and the shard certificates accepted all move to the new CA."""
    clock = FakeClock()
    old, new = cas["own"], cas["new-own"]

    async def run() -> tuple[Server, bytes]:
        settings = _settings(tmp_path, shard="a", shard_urls=(("b", "https://127.0.0.1:1"),))
        server = Server(settings, api=kubernetes.client.ApiClient(), clock=clock)
        config = RequestHeaderConfig(cas["front-proxy"].cert_pem)
        server.requestheader = config
        server.identity = ServingIdentity.from_ca(old, ["127.0.0.1"])
        server.context = server.identity.server_context([config.ca_pem, old.cert_pem])
        server.downloads = DownloadAPI(
            server.api, Storage(tmp_path / "data"), Authenticator(config, old.cert_pem)
        )
        server.shards = ShardClient(old, clock)
        before = server.shards.certificate()
        server.adopt_ca(old)  # the same CA, not due: nothing changes
        assert server.shards.certificate() == before
        server.adopt_ca(new)
        after = server.shards.certificate()
        await server.shards.close()
        return server, after

    server, shard_cert = asyncio.run(run())
    assert server.identity is not None and server.identity.ca_bundle == new.cert_pem
    assert _cert(server.identity.cert_pem).issuer == _cert(new.cert_pem).subject
    assert _cert(shard_cert).issuer == _cert(new.cert_pem).subject
    assert server.downloads is not None
    authenticator = server.downloads.authenticator
    assert authenticator.verify_peer(_der(new.issue(SHARD_PROXY_CN, client=True)[0])) == "shard"
    with pytest.raises(auth.Unauthenticated):
        authenticator.verify_peer(_der(old.issue(SHARD_PROXY_CN, client=True)[0]))


def test_a_renewal_cuts_no_forwarded_download(cas: dict[str, CertificateAuthority], tmp_path: Path) -> None:
    """The CA changes while a forwarded download streams: that download finishes on the session it
    started on; the next request presents a certificate from the new CA."""
    old, new = cas["own"], cas["new-own"]
    release = asyncio.Event
    issuers: list[x509.Name] = []

    def shard_app(gate: asyncio.Event) -> web.Application:
        async def handler(request: web.Request) -> web.StreamResponse:
            ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
            peer = ssl_object.getpeercert(binary_form=True) if ssl_object else None
            issuers.append(x509.load_der_x509_certificate(peer).issuer if peer else x509.Name([]))
            response = web.StreamResponse()
            await response.prepare(request)
            await response.write(b"first half,")
            await gate.wait()
            await response.write(b" second half")
            await response.write_eof()
            return response

        app = web.Application()
        app.router.add_get("/a", handler)
        return app

    async def shard(app: web.Application, ca: CertificateAuthority) -> tuple[web.AppRunner, int]:
        runner = serving_runner(app, _settings(tmp_path))
        await runner.setup()
        context = ServingIdentity.from_ca(ca, ["127.0.0.1"]).server_context([old.cert_pem, new.cert_pem])
        site = TLSSite(runner, 0, context, 5.0, host="127.0.0.1")
        await site.start()
        return runner, site.port

    async def run() -> tuple[bytes, bytes]:
        gate, open_gate = release(), release()
        open_gate.set()
        (runner_old, port_old), (runner_new, port_new) = (
            await shard(shard_app(gate), old),
            await shard(shard_app(open_gate), new),
        )
        client = ShardClient(old)
        try:
            async with client.get(f"https://127.0.0.1:{port_old}/a", CIMultiDict()) as streaming:
                head = await streaming.content.readexactly(len(b"first half,"))
                client.follow(new)  # the Secret was recreated meanwhile
                async with client.get(f"https://127.0.0.1:{port_new}/a", CIMultiDict()) as after:
                    assert await after.read() == b"first half, second half"
                gate.set()
                tail = await streaming.read()
        finally:
            await client.close()
            await runner_old.cleanup()
            await runner_new.cleanup()
        return head, tail

    head, tail = asyncio.run(run())
    assert head + tail == b"first half, second half"
    assert issuers == [_cert(old.cert_pem).subject, _cert(new.cert_pem).subject]
