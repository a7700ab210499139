"""The operator's HTTPS server: one aiohttp app beside kopf, in kopf's event loop.

It serves the download API (``download.py``) and the createdBy admission webhook
(``admission.py``, unauthenticated like any webhook: it only answers with a patch).

Started by ``projectgen run`` (``PROJECTGEN_SERVING_PORT``, default 8443, 0: off). Starting it
needs the API server (the CA Secret, the requestheader ConfigMap), so it is retried in the
background until it works, with the reason logged: the operator reconciles meanwhile, only
downloads wait. Once up, a refresh every :data:`REFRESH_SECONDS` follows a rotated requestheader
CA, a renewed admin-supplied certificate, and puts the caBundle back should an `kubectl apply`
of the APIService have dropped it.

Sharding: every shard serves the same APIService (one Service selects them all); a request for an
export another shard holds (label ``projectgen.io/shard``) is forwarded to that shard's URL from
``PROJECTGEN_SHARD_URLS``, over TLS verified against the shared serving CA, with a client
certificate from it (CN ``projectgen-shard-proxy``) and the user's headers. The receiving shard
authenticates that certificate and authorises the user again.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import ssl
from dataclasses import dataclass, field
from urllib.parse import quote

import aiohttp
import kubernetes
from aiohttp import web
from multidict import CIMultiDict

from projectgen.serving import admission, download
from projectgen.serving.auth import Authenticator, RequestHeaderConfig, User, read_requestheader_config
from projectgen.serving.tls import (
    SHARD_PROXY_CN,
    CABundleTarget,
    CertificateAuthority,
    ServingIdentity,
    ensure_ca,
    load_chain,
    sync_ca_bundle,
)
from projectgen.settings import Settings
from projectgen.storage import Storage

REFRESH_SECONDS = 60.0
RETRY_SECONDS = 10.0
log = logging.getLogger(__name__)
_FORWARDED_RESPONSE_HEADERS = (
    "Content-Type",
    "Content-Length",
    "Content-Range",
    "Content-Disposition",
    "Accept-Ranges",
    "ETag",
    "Repr-Digest",
    "Cache-Control",
)


def kube_client() -> kubernetes.client.ApiClient:
    """Configured like kopf: in-cluster, else the kubeconfig."""
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(client_configuration=configuration)
    return kubernetes.client.ApiClient(configuration)


def serving_names(settings: Settings) -> list[str]:
    """The Service's name first: kube-apiserver verifies an APIService's (and a webhook's) endpoint
    as ``<service>.<namespace>.svc``, whatever address it dials."""
    ns = settings.operator_namespace
    names = [f"projectgen-api.{ns}.svc", f"projectgen-api.{ns}.svc.cluster.local", *settings.serving_names]
    return list(dict.fromkeys(names))


@dataclass
class Server:
    settings: Settings
    api: kubernetes.client.ApiClient = field(default_factory=kube_client)
    identity: ServingIdentity | None = None
    requestheader: RequestHeaderConfig | None = None
    context: ssl.SSLContext | None = None
    downloads: download.DownloadAPI | None = None
    runner: web.AppRunner | None = None
    _issued_at: datetime.datetime | None = None
    _session: aiohttp.ClientSession | None = None
    _task: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start_in_background(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="projectgen serving")

    async def _run(self) -> None:
        while True:
            try:
                await self.start()
                break
            except Exception as exc:  # the API server unreachable, a port taken, a bad Secret: retried
                log.warning("download API not served yet, retrying in %.0fs: %s", RETRY_SECONDS, _brief(exc))
                await asyncio.sleep(RETRY_SECONDS)
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            try:
                await self.refresh()
            except Exception as exc:
                log.warning("download API refresh failed (serving on with what it has): %s", _brief(exc))

    async def start(self) -> None:
        self.identity = await asyncio.to_thread(self._load_identity)
        self.requestheader = await asyncio.to_thread(
            read_requestheader_config, kubernetes.client.CoreV1Api(self.api)
        )
        own_ca = self.identity.ca.cert_pem if self.identity.ca is not None else None
        authenticator = Authenticator(self.requestheader, own_ca)
        self.context = self.identity.server_context(authenticator.trusted_pems())
        storage = Storage(self.settings.data_dir)
        forward = self._forward if self.settings.shard_urls and self.identity.ca is not None else None
        self.downloads = download.DownloadAPI(
            self.api, storage, authenticator, shard=self.settings.shard, forward=forward
        )
        app = web.Application()
        download.add_routes(app, self.downloads)
        admission.add_routes(app)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "0.0.0.0", self.settings.serving_port, ssl_context=self.context)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self.runner = runner
        log.info("download API served on https://0.0.0.0:%d", self.settings.serving_port)
        await asyncio.to_thread(self._sync_bundles)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._session is not None:
            await self._session.close()
        if self.runner is not None:
            await self.runner.cleanup()
        self.api.close()

    # -- certificates and bundles ------------------------------------------------------------

    def _load_identity(self) -> ServingIdentity:
        if self.settings.serving_cert_dir is not None:
            return ServingIdentity.from_dir(self.settings.serving_cert_dir)
        ca = ensure_ca(kubernetes.client.CoreV1Api(self.api), self.settings.operator_namespace)
        self._issued_at = datetime.datetime.now(datetime.UTC)
        return ServingIdentity.from_ca(ca, serving_names(self.settings))

    def bundle_targets(self) -> list[CABundleTarget]:
        """The objects whose caBundle must name the serving CA: the APIService, and the createdBy
        webhook configuration, installed only where MutatingAdmissionPolicy is off (so optional)."""
        targets = [CABundleTarget.apiservice(self.settings.apiservice)] if self.settings.apiservice else []
        if self.settings.webhook_configuration:
            targets.append(
                CABundleTarget.mutating_webhook(self.settings.webhook_configuration, optional=True)
            )
        return targets

    def _sync_bundles(self) -> None:
        if self.identity is None or self.identity.ca_bundle is None:
            return
        for target in self.bundle_targets():
            sync_ca_bundle(self.api, target, self.identity.ca_bundle)

    async def refresh(self) -> None:
        if self.identity is None or self.context is None or self.downloads is None:
            return
        renew = self._issued_at is not None and (
            datetime.datetime.now(datetime.UTC) - self._issued_at > datetime.timedelta(days=30)
        )
        if self.identity.changed_on_disk() or renew:
            self.identity = await asyncio.to_thread(self._load_identity)
            load_chain(self.context, self.identity.cert_pem, self.identity.key_pem)  # new handshakes
            log.info("serving certificate reloaded")
        config = await asyncio.to_thread(read_requestheader_config, kubernetes.client.CoreV1Api(self.api))
        if config != self.requestheader:
            self.requestheader = config
            own_ca = self.identity.ca.cert_pem if self.identity.ca is not None else None
            self.downloads.authenticator = Authenticator(config, own_ca)
            # The context can only gain CAs; the Authenticator decides which issuer counts.
            self.context.load_verify_locations(cadata=config.ca_pem.decode())
            log.info("requestheader configuration reloaded")
        await asyncio.to_thread(self._sync_bundles)

    # -- shards ------------------------------------------------------------------------------

    def _client_session(self, ca: CertificateAuthority) -> aiohttp.ClientSession:
        if self._session is None:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=ca.cert_pem.decode())
            cert, key = ca.issue(SHARD_PROXY_CN, client=True)
            load_chain(context, cert, key)
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=context),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60),
                auto_decompress=False,
            )
        return self._session

    async def _forward(self, request: web.Request, user: User, shard: str) -> web.StreamResponse:
        base = dict(self.settings.shard_urls).get(shard)
        if base is None or self.identity is None or self.identity.ca is None or self.requestheader is None:
            return download.status_response(
                503, f"no URL for shard {shard!r} in PROJECTGEN_SHARD_URLS: the export's archive is there"
            )
        headers = forwarded_headers(user, self.requestheader)
        for name in ("Range", "If-Range"):
            if name in request.headers:
                headers[name] = request.headers[name]
        session = self._client_session(self.identity.ca)
        try:
            async with session.get(base + request.path, headers=headers) as upstream:
                response = web.StreamResponse(
                    status=upstream.status,
                    headers={
                        h: upstream.headers[h] for h in _FORWARDED_RESPONSE_HEADERS if h in upstream.headers
                    },
                )
                await response.prepare(request)
                async for chunk in upstream.content.iter_chunked(download.CHUNK):
                    await response.write(chunk)
                await response.write_eof()
                return response
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("forwarding a download to shard %s failed: %s", shard, exc)
            return download.status_response(503, f"shard {shard!r}, which holds the archive, is unreachable")


def _brief(exc: BaseException) -> str:
    """An error for the log: an ApiException's status, never its headers or body."""
    if isinstance(exc, kubernetes.client.exceptions.ApiException):
        return f"HTTP {exc.status} {exc.reason}"
    return f"{type(exc).__name__}: {exc}"


def forwarded_headers(user: User, config: RequestHeaderConfig) -> CIMultiDict[str]:
    """The user as a front proxy sends it, in the header names the cluster configured."""
    headers: CIMultiDict[str] = CIMultiDict()
    if config.username_headers:
        headers[config.username_headers[0]] = user.name
    if user.uid and config.uid_headers:
        headers[config.uid_headers[0]] = user.uid
    if config.group_headers:
        for group in user.groups:
            headers.add(config.group_headers[0], group)
    if config.extra_prefixes:
        for key, values in user.extra.items():
            for value in values:
                headers.add(config.extra_prefixes[0] + quote(key, safe=""), value)
    return headers
