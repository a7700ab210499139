"""The operator's HTTPS server: one aiohttp app beside kopf, in kopf's event loop.

It serves the download API (``download.py``) and the createdBy admission webhook
(``admission.py``, unauthenticated like any webhook: it only answers with a patch).

Started by ``projectgen run`` (``PROJECTGEN_SERVING_PORT``, default 8443, 0: off). Starting it
needs the API server (the CA Secret, the requestheader ConfigMap), so it is retried in the
background until it works, with the reason logged: the operator reconciles meanwhile, only
downloads wait. Once up, a refresh every ``PROJECTGEN_SERVING_REFRESH_SECONDS`` follows a rotated
requestheader CA, a renewed admin-supplied certificate, a recreated CA Secret (see
:meth:`Server.adopt_ca`), and puts the caBundle back should an `kubectl apply` of the APIService
have dropped it.

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

from projectgen import metrics
from projectgen.serving import admission, download
from projectgen.serving.auth import Authenticator, RequestHeaderConfig, User, read_requestheader_config
from projectgen.serving.bounds import DownloadSlots
from projectgen.serving.shards import Clock, ShardClient, utcnow
from projectgen.serving.tls import (
    CABundleTarget,
    CertificateAuthority,
    ServingIdentity,
    ensure_ca,
    fingerprint,
    load_chain,
    sync_ca_bundle,
)
from projectgen.settings import Settings
from projectgen.storage import Storage

RETRY_SECONDS = 10.0
SERVING_RENEW = datetime.timedelta(days=30)
"""The operator's own serving certificate (90 days) is reissued after this."""
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
    clock: Clock = utcnow
    shards: ShardClient | None = None
    """Forwards downloads to other shards (None: not sharded, or an admin-supplied certificate)."""
    _issued_at: datetime.datetime | None = None
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
            await asyncio.sleep(self.settings.serving_refresh_seconds)
            try:
                await self.refresh()
            except Exception as exc:
                log.warning("download API refresh failed (serving on with what it has): %s", _brief(exc))

    async def start(self) -> None:
        self.identity = await asyncio.to_thread(self._load_identity)
        metrics.serving_certificate(self.identity.expires_at())
        self.requestheader = await asyncio.to_thread(
            read_requestheader_config, kubernetes.client.CoreV1Api(self.api)
        )
        own_ca = self.identity.ca.cert_pem if self.identity.ca is not None else None
        authenticator = Authenticator(self.requestheader, own_ca)
        self.context = self.identity.server_context(authenticator.trusted_pems())
        storage = Storage(self.settings.data_dir)
        if self.settings.shard_urls and self.identity.ca is not None:
            self.shards = ShardClient(self.identity.ca, self.clock)
        self.downloads = download.DownloadAPI(
            self.api,
            storage,
            authenticator,
            shard=self.settings.shard,
            forward=self._forward if self.shards is not None else None,
            slots=DownloadSlots(self.settings.downloads_max, self.settings.downloads_per_user),
            idle_timeout=self.settings.serving_idle_timeout,
        )
        app = web.Application()
        download.add_routes(app, self.downloads)
        admission.add_routes(app, body_timeout=self.settings.serving_idle_timeout)
        runner = serving_runner(app, self.settings)
        await runner.setup()
        site = TLSSite(runner, self.settings.serving_port, self.context, self.settings.serving_header_timeout)
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
        if self.shards is not None:
            await self.shards.close()
        if self.runner is not None:
            await self.runner.cleanup()
        self.api.close()

    # -- certificates and bundles ------------------------------------------------------------

    def _load_identity(self) -> ServingIdentity:
        if self.settings.serving_cert_dir is not None:
            return ServingIdentity.from_dir(self.settings.serving_cert_dir)
        return self._identity_from(self._read_ca())

    def _read_ca(self) -> CertificateAuthority:
        return ensure_ca(kubernetes.client.CoreV1Api(self.api), self.settings.operator_namespace)

    def _identity_from(self, ca: CertificateAuthority) -> ServingIdentity:
        self._issued_at = self.clock()
        return ServingIdentity.from_ca(ca, serving_names(self.settings), now=self._issued_at)

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
        """Follow what may change under a running server: the admin's certificate files, or the CA
        Secret (recreated: a new CA) and the age of the certificates issued from it; the requestheader
        configuration; the caBundles."""
        if self.identity is None or self.context is None or self.downloads is None:
            return
        if self.settings.serving_cert_dir is not None:
            if self.identity.changed_on_disk():
                self.identity = await asyncio.to_thread(self._load_identity)
                load_chain(self.context, self.identity.cert_pem, self.identity.key_pem)  # new handshakes
                metrics.serving_certificate(self.identity.expires_at())
                log.info("serving certificate reloaded")
        else:
            self.adopt_ca(await asyncio.to_thread(self._read_ca))
        config = await asyncio.to_thread(read_requestheader_config, kubernetes.client.CoreV1Api(self.api))
        if config != self.requestheader:
            self.requestheader = config
            own_ca = self.identity.ca.cert_pem if self.identity.ca is not None else None
            self.downloads.authenticator = Authenticator(config, own_ca)
            # The context can only gain CAs; the Authenticator decides which issuer counts.
            self.context.load_verify_locations(cadata=config.ca_pem.decode())
            log.info("requestheader configuration reloaded")
        await asyncio.to_thread(self._sync_bundles)

    def adopt_ca(self, ca: CertificateAuthority) -> None:
        """Serve, trust and forward with ``ca`` from now on when it is not the CA in use (the Secret
        was recreated), and reissue the serving certificate when it is due either way."""
        if self.identity is None or self.context is None or self.downloads is None:
            return
        changed = ca != self.identity.ca
        due = self._issued_at is None or self.clock() - self._issued_at > SERVING_RENEW
        if not (changed or due):
            return
        self.identity = self._identity_from(ca)
        load_chain(self.context, self.identity.cert_pem, self.identity.key_pem)  # new handshakes
        metrics.serving_certificate(self.identity.expires_at())
        if changed:
            # The handshake accepts both CAs from now on; the Authenticator counts only the new one.
            self.context.load_verify_locations(cadata=ca.cert_pem.decode())
            if self.requestheader is not None:
                self.downloads.authenticator = Authenticator(self.requestheader, ca.cert_pem)
            if self.shards is not None:
                self.shards.follow(ca)
            log.info("serving CA changed (now %s): certificates reissued from it", fingerprint(ca.cert_pem))
        else:
            log.info("serving certificate renewed")

    # -- shards ------------------------------------------------------------------------------

    async def _forward(self, request: web.Request, user: User, shard: str) -> web.StreamResponse:
        base = dict(self.settings.shard_urls).get(shard)
        if base is None or self.shards is None or self.requestheader is None:
            return download.status_response(
                503, f"no URL for shard {shard!r} in PROJECTGEN_SHARD_URLS: the export's archive is there"
            )
        headers = forwarded_headers(user, self.requestheader)
        for name in ("Range", "If-Range"):
            if name in request.headers:
                headers[name] = request.headers[name]
        try:
            async with self.shards.get(base + request.path, headers) as upstream:
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


def serving_runner(app: web.Application, settings: Settings) -> web.AppRunner:
    """The runner of the HTTPS port. aiohttp's keep-alive timeout runs from the moment a connection
    is up (after the TLS handshake) until a request's headers are complete, and again after each
    response: a client dribbling its headers (slowloris) or idling holds the connection no longer."""
    return web.AppRunner(
        app, access_log=None, handle_signals=False, keepalive_timeout=settings.serving_header_timeout
    )


class TLSSite(web.BaseSite):
    """aiohttp's TCPSite with a TLS handshake timeout (asyncio's default is 60 s, not configurable
    through TCPSite): a connection that never finishes its handshake is closed after ``timeout``."""

    def __init__(
        self,
        runner: web.AppRunner,
        port: int,
        context: ssl.SSLContext,
        timeout: float,
        host: str = "0.0.0.0",  # the Service's endpoint: every interface of the pod
    ) -> None:
        super().__init__(runner, ssl_context=context)
        self._host, self._port, self._handshake_timeout = host, port, timeout
        self.port = port
        """The bound port (the one asked for, or the one the kernel chose for 0) once started."""

    @property
    def name(self) -> str:
        return f"https://{self._host}:{self.port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None  # set by runner.setup()
        listening = await asyncio.get_running_loop().create_server(
            server,
            self._host,
            self._port,
            ssl=self._ssl_context,
            ssl_handshake_timeout=self._handshake_timeout,
            reuse_address=True,
        )
        self._server = listening
        self.port = int(listening.sockets[0].getsockname()[1])


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
