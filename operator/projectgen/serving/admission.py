"""The createdBy admission webhook, for clusters without MutatingAdmissionPolicy.

Why a webhook at all: ``manifests/created-by/`` stamps the requesting user with an in-tree
MutatingAdmissionPolicy, which is GA only from Kubernetes 1.36 (beta and off by default in 1.35), so
on a 1.35 cluster ``status.createdBy`` would stay empty. This answers the same question the policy does,
from the operator's HTTPS server: on CREATE of a GeneratedProject or a RepositoryExport, set the
``projectgen.io/created-by`` annotation to ``request.userInfo.username``, overwriting whatever the
request carried. Changing it later is refused by the same in-tree ValidatingAdmissionPolicy
(admissionregistration.k8s.io/v1, GA since 1.30) that the policy install uses, so immutability does
not depend on the operator being up.

The webhook is unauthenticated on purpose, like every admission webhook without an admission
kubeconfig: it has no side effects and tells a caller nothing but the patch it would apply.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web

from projectgen.api.v1alpha1 import GROUP, generatedproject, repositoryexport
from projectgen.api.v1alpha1.common import CREATED_BY_ANNOTATION

PATH = "/admission/created-by"
"""Where the MutatingWebhookConfiguration of ``manifests/created-by/webhook/`` points."""
STAMPED = frozenset({generatedproject.PLURAL, repositoryexport.PLURAL})
"""The resources whose creator is recorded: the same list as the policies' resourceRules."""
MAX_REVIEW_BYTES = 4 * 1024 * 1024  # the API server's own request limit is 3 MiB
MAX_DEPTH = 200
"""Deepest nesting of arrays and objects a review may have. A GeneratedProject nests about ten deep
(its template answers a few more); Go's encoding/json, which kube-apiserver uses, stops at 10000."""
BODY_TIMEOUT = web.AppKey("admission_body_timeout", float)
PARSER = web.AppKey("admission_parser", ThreadPoolExecutor)
log = logging.getLogger(__name__)


class BadReview(ValueError):
    """The body is not an admission.k8s.io/v1 AdmissionReview request."""


def _escape(key: str) -> str:
    """A JSON Pointer reference token (RFC 6901)."""
    return key.replace("~", "~0").replace("/", "~1")


def created_by_patch(obj: dict[str, Any], username: str) -> list[dict[str, Any]]:
    """The JSON Patch that makes the object's annotation say ``username``, and nothing else."""
    annotations = (obj.get("metadata") or {}).get("annotations")
    if not isinstance(annotations, dict):
        return [{"op": "add", "path": "/metadata/annotations", "value": {CREATED_BY_ANNOTATION: username}}]
    if annotations.get(CREATED_BY_ANNOTATION) == username:
        return []
    return [
        {"op": "add", "path": f"/metadata/annotations/{_escape(CREATED_BY_ANNOTATION)}", "value": username}
    ]


def review(body: dict[str, Any]) -> dict[str, Any]:
    """The AdmissionReview response to an AdmissionReview request (pure; raises :class:`BadReview`)."""
    if body.get("apiVersion") != "admission.k8s.io/v1" or body.get("kind") != "AdmissionReview":
        raise BadReview("expected an admission.k8s.io/v1 AdmissionReview")
    request = body.get("request")
    if not isinstance(request, dict) or not isinstance(request.get("uid"), str):
        raise BadReview("the AdmissionReview has no request.uid")
    response: dict[str, Any] = {"uid": request["uid"], "allowed": True}
    resource = request.get("resource") or {}
    obj = request.get("object")
    username = (request.get("userInfo") or {}).get("username")
    if (
        request.get("operation") == "CREATE"
        and resource.get("group") == GROUP
        and resource.get("resource") in STAMPED
        and not request.get("subResource")
        and isinstance(obj, dict)
    ):
        if not isinstance(username, str) or not username:
            # The policy would stamp an empty name; an anonymous create is refused instead of unlabelled.
            response = {
                "uid": request["uid"],
                "allowed": False,
                "status": {
                    "code": 403,
                    "reason": "Forbidden",
                    "message": "createdBy: the request has no user",
                },
            }
        else:
            patch = created_by_patch(obj, username)
            if patch:
                response["patchType"] = "JSONPatch"
                response["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}


_TOKEN = re.compile(r'["\[\]{}]')


def nests_deeper(text: str, limit: int) -> bool:
    """Whether the arrays and objects of a JSON text nest deeper than ``limit`` (strings skipped with
    json's own scanner). Checked before ``json.loads``, whose recursion ends in RecursionError, not a
    ValueError, on a few thousand ``[``: a 500 with a traceback. Linear, and stops at the limit."""
    depth, pos = 0, 0
    while match := _TOKEN.search(text, pos):
        if match.group() == '"':
            try:
                _, pos = json.decoder.scanstring(text, match.end())  # type: ignore[attr-defined]
            except ValueError:
                return False  # not JSON: json.loads says where
            continue
        depth += 1 if match.group() in "[{" else -1
        if depth > limit:
            return True
        pos = match.end()
    return False


def decode(raw: bytes) -> dict[str, Any]:
    """The AdmissionReview in ``raw`` (raises :class:`BadReview`). Run off the event loop: a body of
    a few MiB takes tens of milliseconds to check and parse, which the operator's loop (kopf's,
    shared with every handler and the downloads) should not wait for."""
    if len(raw) > MAX_REVIEW_BYTES:
        raise BadReview(f"larger than {MAX_REVIEW_BYTES} bytes")
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise BadReview("not UTF-8") from None
    if nests_deeper(text, MAX_DEPTH):
        raise BadReview(f"nested deeper than {MAX_DEPTH} levels")
    try:
        body = json.loads(text)
    except ValueError as exc:  # json.JSONDecodeError is one
        raise BadReview(str(exc)) from None
    if not isinstance(body, dict):
        raise BadReview("expected a JSON object")
    return body


async def _read_body(request: web.Request, limit: int) -> bytes:
    """The body up to ``limit`` bytes. ``content.read(n)`` returns what has arrived so far, which
    for a review of a few MiB is its first segments only: read until the end (or the limit)."""
    chunks: list[bytes] = []
    size = 0
    while size < limit and (chunk := await request.content.read(limit - size)):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


async def handle(request: web.Request) -> web.Response:
    """POST /admission/created-by."""
    if request.content_length is not None and request.content_length > MAX_REVIEW_BYTES:
        return web.json_response({"message": "AdmissionReview too large"}, status=413)
    try:
        async with asyncio.timeout(request.app[BODY_TIMEOUT]):
            raw = await _read_body(request, MAX_REVIEW_BYTES + 1)
    except TimeoutError:
        return web.json_response({"message": "the AdmissionReview did not arrive in time"}, status=408)
    if len(raw) > MAX_REVIEW_BYTES:
        return web.json_response({"message": "AdmissionReview too large"}, status=413)
    try:
        body = await asyncio.get_running_loop().run_in_executor(request.app[PARSER], decode, raw)
        answer = review(body)
    except ValueError as exc:  # BadReview is one
        return web.json_response({"message": f"bad AdmissionReview: {exc}"}, status=400)
    log.debug("createdBy review %s: allowed=%s", answer["response"]["uid"], answer["response"]["allowed"])
    return web.json_response(answer)


def add_routes(app: web.Application, *, body_timeout: float = 60.0) -> None:
    """The webhook's route, with its own two parser threads: a flood of large reviews waits for them
    instead of taking the threads that downloads and the API calls use."""
    app[BODY_TIMEOUT] = body_timeout
    app[PARSER] = ThreadPoolExecutor(max_workers=2, thread_name_prefix="admission-parse")

    async def shutdown(app: web.Application) -> None:
        app[PARSER].shutdown(wait=False, cancel_futures=True)

    app.on_cleanup.append(shutdown)
    app.router.add_post(PATH, handle)
