"""The aggregated download API: ``GET /apis/download.projectgen.io/v1alpha1/namespaces/NS/repositoryexports/NAME/archive``.

A group of its own (``download.projectgen.io``): ``projectgen.io`` is served by kube-apiserver
for the CRDs, and an APIService takes over a whole group/version. The resource is only the
``archive`` subresource; ``repositoryexports`` itself is listed in discovery without verbs, as
kube-apiserver does for a parent that is not served, so ``kubectl get --raw`` and RBAC rules name
it as ``repositoryexports/archive``.

The answer, in kube-apiserver's own terms where it has them: errors are ``Status`` objects (403
worded as the API server's authorizer words it, 404 ``NotFound``, 409 ``Conflict`` with the export's
phase and message while it is not Completed). The archive is streamed in chunks read off the event
loop (memory stays flat whatever the size), one ``Range`` is honoured (206, 416 with
``Content-Range: bytes */SIZE``; ``If-Range`` against the ETag), the ETag is the archive's SHA-256
from ``status.archiveSha256`` and ``Repr-Digest`` (RFC 9530) carries it too.

Which file: never ``status.archivePath`` as given, but the file of that name inside the directory
:class:`~projectgen.storage.Storage` assigns to this namespace, name and uid, of the export whose
own namespace and name are the URL's (both checked as Kubernetes names first: 400 otherwise).

Bounds (README, Security): downloads at once per user and in all (429 with ``Retry-After``), a
timeout on each write to a client that reads nothing, and on the API calls made for a request.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import urllib3
from aiohttp import web
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from projectgen.api.v1alpha1 import GROUP as CRD_GROUP
from projectgen.api.v1alpha1 import VERSION
from projectgen.api.v1alpha1.repositoryexport import ARCHIVE_TYPES, PLURAL, RepositoryExportPhase
from projectgen.serving.auth import (
    API_TIMEOUT,
    Authenticator,
    Unauthenticated,
    User,
    authorize,
    peer_certificate,
)
from projectgen.serving.bounds import RETRY_AFTER_SECONDS, DownloadSlots
from projectgen.storage import Storage

GROUP = "download.projectgen.io"
GROUP_VERSION = f"{GROUP}/{VERSION}"
SUBRESOURCE = "archive"
SHARD_LABEL = "projectgen.io/shard"
CHUNK = 256 * 1024
ARCHIVE_ROUTE = f"/apis/{GROUP}/{VERSION}/namespaces/{{namespace}}/{PLURAL}/{{name}}/{SUBRESOURCE}"
log = logging.getLogger(__name__)


def download_path(namespace: str, name: str) -> str:
    """The API path of an export's archive (``status.downloadPath``), for ``kubectl get --raw``."""
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}/{SUBRESOURCE}"


# -- Status objects ------------------------------------------------------------------------------

_REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 409: "Conflict"}
_REASONS |= {416: "RequestedRangeNotSatisfiable", 429: "TooManyRequests", 500: "InternalError"}
_REASONS |= {502: "BadGateway"}
_REASONS |= {503: "ServiceUnavailable"}


def status_body(code: int, message: str, *, name: str = "", kind: str = PLURAL) -> dict[str, Any]:
    """A ``meta/v1`` Status, the body kube-apiserver sends with every error."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": _REASONS.get(code, "Unknown"),
        "code": code,
    }
    if name:
        body["details"] = {"name": name, "group": GROUP, "kind": kind}
    return body


def status_response(
    code: int, message: str, *, name: str = "", headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(status_body(code, message, name=name), status=code, headers=headers)


def forbidden_message(user: User, namespace: str, name: str, reason: str) -> str:
    """kube-apiserver's words (k8s.io/apiserver/pkg/endpoints/handlers/responsewriters.forbiddenMessage)."""
    message = (
        f'{PLURAL}.{GROUP} "{name}" is forbidden: User "{user.name}" cannot get resource '
        f'"{PLURAL}/{SUBRESOURCE}" in API group "{GROUP}" in the namespace "{namespace}"'
    )
    return f"{message}: {reason}" if reason else message


# -- discovery -----------------------------------------------------------------------------------


def _group() -> dict[str, Any]:
    version = {"groupVersion": GROUP_VERSION, "version": VERSION}
    return {"name": GROUP, "versions": [version], "preferredVersion": version}


def api_group_list() -> dict[str, Any]:
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [_group()]}


def api_group() -> dict[str, Any]:
    return {"kind": "APIGroup", "apiVersion": "v1", **_group()}


def api_resource_list() -> dict[str, Any]:
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": GROUP_VERSION,
        "resources": [
            {
                "name": PLURAL,
                "singularName": "repositoryexport",
                "namespaced": True,
                "kind": "RepositoryExport",
                "verbs": [],
            },
            {
                "name": f"{PLURAL}/{SUBRESOURCE}",
                "singularName": "",
                "namespaced": True,
                "kind": "RepositoryExport",
                "verbs": ["get"],
            },
        ],
    }


def openapi_v2() -> dict[str, Any]:
    """An empty OpenAPI v2 document: the aggregator merges every APIService's spec and retries
    (logging each time) where there is none; the archive is a raw byte stream, not a schema'd kind."""
    return {"swagger": "2.0", "info": {"title": GROUP, "version": VERSION}, "paths": {}}


def openapi_v3() -> dict[str, Any]:
    return {"paths": {}}


# -- Range ---------------------------------------------------------------------------------------

_RANGE = re.compile(r"^bytes=([0-9]*)-([0-9]*)$")  # ASCII digits: int() would also take "٣"
_MAX_DIGITS = 18
"""Positions longer than this (leading zeros aside) are past the end of any file (10**18 bytes is an
exabyte): compared as such, never given to ``int()``, whose digit limit (4300) raises ValueError."""


class Unsatisfiable(ValueError):
    pass


def _position(digits: str) -> int | None:
    """A range position, or None when it is larger than any file could be."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= _MAX_DIGITS else None


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The one byte range ``(first, last)`` inclusive asked for, or None for the whole file.

    Several ranges, or a header that is not a byte range, are answered with the whole file (RFC
    9110 lets a server ignore Range). Raises :class:`Unsatisfiable` for a range past the end, as a
    first position of any length is (RFC 9110 14.1.1: valid syntax, nothing of the file in it); a
    last position or a suffix past the end is the rest of the file, whatever its length."""
    if not header:
        return None
    match = _RANGE.match(header.strip().replace(" ", ""))
    if not match or (not match[1] and not match[2]):
        return None
    if not match[1]:  # suffix: the last N bytes
        count = _position(match[2])
        if count == 0 or size == 0:
            raise Unsatisfiable(header)
        return max(0, size - count) if count is not None else 0, size - 1
    first = _position(match[1])
    if first is None or first >= size:
        raise Unsatisfiable(header)
    last = _position(match[2]) if match[2] else size - 1
    if last is None:
        last = size - 1
    if last < first:
        return None
    return first, min(last, size - 1)


# -- the export ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Located:
    path: Path
    sha256: str
    filename: str


class NotServable(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def locate(export: dict[str, Any], storage: Storage) -> Located:
    """The archive file of a Completed export (pure apart from a stat), or :class:`NotServable`."""
    meta = export.get("metadata") or {}
    spec = export.get("spec") or {}
    status = export.get("status") or {}
    namespace, name = meta.get("namespace", ""), meta.get("name", "")
    if spec.get("exportType") not in ARCHIVE_TYPES:
        raise NotServable(
            409,
            f"RepositoryExport {namespace}/{name} is a {spec.get('exportType')} export: it publishes a "
            f"repository (status.repositoryUrl), there is no archive to download",
        )
    phase = status.get("phase") or RepositoryExportPhase.PENDING
    current = status.get("observedGeneration") == meta.get("generation")
    if phase != RepositoryExportPhase.COMPLETED or not current or not status.get("archivePath"):
        detail = status.get("errorMessage") or _ready_message(status) or "not reconciled yet"
        raise NotServable(409, f"RepositoryExport {namespace}/{name} is {phase}, not Completed: {detail}")
    filename = os.path.basename(str(status["archivePath"]))
    try:  # only the name is taken from the status; the directory is this export's own
        path = storage.export_file(namespace, name, str(meta.get("uid", "")), filename)
    except ValueError:
        raise NotServable(
            500, f"RepositoryExport {namespace}/{name}: status.archivePath does not name an archive"
        ) from None
    if not path.is_file():
        raise NotServable(
            409,
            f"RepositoryExport {namespace}/{name} is Completed but its archive is not on this operator's "
            "volume (being rewritten, or the volume was replaced): try again in a moment",
        )
    return Located(path, str(status.get("archiveSha256") or ""), filename)


def _ready_message(status: dict[str, Any]) -> str:
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Ready":
            return str(cond.get("message") or "")
    return ""


_LABEL = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_DNS1123_LABEL = re.compile(rf"{_LABEL}\Z")
_DNS1123_SUBDOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\Z")


def invalid_reference(namespace: str, name: str) -> str:
    """Why the URL's namespace or name cannot name a RepositoryExport ('' when they can).

    Kubernetes' rules (k8s.io/apimachinery validation): a namespace is a DNS-1123 label (at most 63
    characters), an object name a DNS-1123 subdomain (at most 253). Checked before anything is asked
    of the API server, so ``..``, ``.``, an encoded ``/`` or an empty segment never reaches a client
    that would resolve it into another path (``namespaces/../repositoryexports`` is the cluster-wide
    list)."""
    if len(namespace) > 63 or not _DNS1123_LABEL.match(namespace):
        return (
            f"invalid namespace {_shortened(namespace)!r}: a namespace is a DNS-1123 label (lower-case "
            "letters, digits and '-', starting and ending with a letter or digit, at most 63 characters)"
        )
    if len(name) > 253 or not _DNS1123_SUBDOMAIN.match(name):
        return (
            f"invalid name {_shortened(name)!r}: a RepositoryExport's name is a DNS-1123 subdomain "
            "(lower-case letters, digits, '-' and '.', at most 253 characters)"
        )
    return ""


def find_export(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    """The export by name, with ``list`` (the operator's role has list/watch on exports, not get).

    Only an item whose own namespace and name are the ones asked for counts: whatever the list
    answered (another path, a field selector ignored), nothing else is served under this URL."""
    answer = cast(
        dict[str, Any],
        client.CustomObjectsApi(api).list_namespaced_custom_object(
            CRD_GROUP,
            VERSION,
            namespace,
            PLURAL,
            field_selector=f"metadata.name={name}",
            timeout_seconds=int(API_TIMEOUT),
            _request_timeout=API_TIMEOUT,
        ),
    )
    return the_export(answer.get("items") or [], namespace, name)


def the_export(items: list[dict[str, Any]], namespace: str, name: str) -> dict[str, Any] | None:
    for item in items:
        meta = item.get("metadata") or {}
        if meta.get("namespace") == namespace and meta.get("name") == name:
            return dict(item)
    return None


# -- the handler ---------------------------------------------------------------------------------

Forwarder = Callable[[web.Request, User, str], Awaitable[web.StreamResponse]]


@dataclass
class DownloadAPI:
    api: client.ApiClient
    storage: Storage
    authenticator: Authenticator
    shard: str = ""
    forward: Forwarder | None = None
    """Proxies a request to the named shard (None: not sharded)."""
    slots: DownloadSlots = field(default_factory=lambda: DownloadSlots(total=32, per_user=4))
    idle_timeout: float = 60.0
    """Seconds a write to the client may wait for the socket before the download is dropped."""

    def user(self, request: web.Request) -> User:
        return self.authenticator.authenticate(peer_certificate(request.transport), request.headers)

    async def discovery(self, request: web.Request) -> web.StreamResponse:
        """Discovery carries no user (the aggregator's availability probe): the certificate is enough."""
        try:
            self.authenticator.verify_peer(peer_certificate(request.transport))
        except Unauthenticated as exc:
            return status_response(401, f"Unauthorized: {exc}")
        documents = {
            "/apis": api_group_list,
            f"/apis/{GROUP}": api_group,
            f"/apis/{GROUP}/{VERSION}": api_resource_list,
            "/openapi/v2": openapi_v2,
            "/openapi/v3": openapi_v3,
        }
        return web.json_response(documents[request.path.rstrip("/")]())

    async def archive(self, request: web.Request) -> web.StreamResponse:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        try:
            user = self.user(request)
        except Unauthenticated as exc:
            log.info("download refused: %s", exc)
            return status_response(401, f"Unauthorized: {exc}")
        invalid = invalid_reference(namespace, name)
        if invalid:
            return status_response(400, invalid)
        refusal = self.slots.acquire(user.name)
        if refusal:
            log.info("download of %s/%s by %s refused: %s", namespace, name, user.name, refusal)
            return status_response(429, refusal, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
        try:
            return await self._archive(request, user, namespace, name)
        finally:
            self.slots.release(user.name)

    async def _archive(
        self, request: web.Request, user: User, namespace: str, name: str
    ) -> web.StreamResponse:
        decision = await asyncio.to_thread(
            authorize,
            self.api,
            user,
            verb="get",
            group=GROUP,
            resource=PLURAL,
            subresource=SUBRESOURCE,
            namespace=namespace,
            name=name,
        )
        if not decision.allowed:
            log.info("download of %s/%s by %s forbidden", namespace, name, user.name)
            return status_response(403, forbidden_message(user, namespace, name, decision.reason), name=name)
        try:
            export = await asyncio.to_thread(find_export, self.api, namespace, name)
        except ApiException as exc:
            return status_response(503, f"reading {PLURAL}.{CRD_GROUP} {namespace}/{name}: HTTP {exc.status}")
        except urllib3.exceptions.HTTPError as exc:
            return status_response(
                503, f"reading {PLURAL}.{CRD_GROUP} {namespace}/{name}: {type(exc).__name__}"
            )
        if export is None:
            return status_response(404, f'{PLURAL}.{CRD_GROUP} "{name}" not found', name=name)
        holder = ((export.get("metadata") or {}).get("labels") or {}).get(SHARD_LABEL, "")
        if self.shard and holder and holder != self.shard:
            if self.forward is None or user.via == "shard":
                return status_response(
                    503,
                    f"RepositoryExport {namespace}/{name} is held by shard {holder!r}, which this shard "
                    "cannot reach: set PROJECTGEN_SHARD_URLS",
                )
            return await self.forward(request, user, holder)
        try:
            located = locate(export, self.storage)
        except NotServable as exc:
            return status_response(exc.code, exc.message, name=name)
        return await stream_file(request, located, idle_timeout=self.idle_timeout)


async def stream_file(
    request: web.Request, located: Located, *, idle_timeout: float | None = None
) -> web.StreamResponse:
    try:
        handle = await asyncio.to_thread(open, located.path, "rb")
    except OSError as exc:
        return status_response(409, f"the archive is not readable right now: {exc.strerror}")
    try:
        size = os.fstat(handle.fileno()).st_size
        etag = f'"{located.sha256}"' if located.sha256 else ""
        headers = {
            "Content-Type": _content_type(located.filename),
            "Content-Disposition": f'attachment; filename="{located.filename}"',
            "Accept-Ranges": "bytes",
            "Cache-Control": "private, no-cache",
        }
        if etag:
            headers["ETag"] = etag
            headers["Repr-Digest"] = f"sha-256=:{base64.b64encode(bytes.fromhex(located.sha256)).decode()}:"
        if_range = request.headers.get("If-Range")
        wanted = request.headers.get("Range") if (not if_range or if_range == etag) else None
        try:
            span = parse_range(wanted, size)
        except Unsatisfiable:
            return status_response(
                416,
                f"range {_shortened(wanted or '')} is past the end of the archive ({size} bytes)",
                headers={"Content-Range": f"bytes */{size}", **({"ETag": etag} if etag else {})},
            )
        if span is None:
            first, last, status = 0, size - 1, 200
        else:
            (first, last), status = span, 206
            headers["Content-Range"] = f"bytes {first}-{last}/{size}"
        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = last - first + 1
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        remaining = last - first + 1
        await asyncio.to_thread(handle.seek, first)
        while remaining > 0:
            chunk = await asyncio.to_thread(handle.read, min(CHUNK, remaining))
            if not chunk:
                break  # truncated under us: the client sees a short body and the ETag check fails
            try:  # waits for the socket: backpressure keeps memory flat
                async with asyncio.timeout(idle_timeout):
                    await response.write(chunk)
            except TimeoutError:
                # A client that stopped reading (or reads a few bytes a minute) keeps no slot.
                log.info(
                    "download of %s dropped: the client read nothing for %ss", located.filename, idle_timeout
                )
                if request.transport is not None:
                    request.transport.abort()
                return response
            except ConnectionError:  # the client went (kube-apiserver ends it at its request timeout)
                log.info("download of %s ended by the client, %d bytes short", located.filename, remaining)
                return response
            remaining -= len(chunk)
        await response.write_eof()
        return response
    finally:
        handle.close()


def _shortened(text: str, limit: int = 80) -> str:
    """A header echoed in a message: a hostile one may be kilobytes long."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _content_type(filename: str) -> str:
    if filename.endswith(".zip"):
        return "application/zip"
    if filename.endswith(".tar.gz"):
        return "application/gzip"
    if filename.endswith(".tar"):
        return "application/x-tar"
    return "application/octet-stream"


def add_routes(app: web.Application, api: DownloadAPI) -> None:
    for path in ("/apis", f"/apis/{GROUP}", f"/apis/{GROUP}/{VERSION}", "/openapi/v2", "/openapi/v3"):
        app.router.add_get(path, api.discovery)
    app.router.add_get(ARCHIVE_ROUTE, api.archive)
