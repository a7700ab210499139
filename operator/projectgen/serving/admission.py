"""The createdBy admission webhook, for clusters without MutatingAdmissionPolicy.

Why a webhook at all: ``manifests/created-by/`` stamps the requesting user with an in-tree
MutatingAdmissionPolicy, but that API is beta in Kubernetes 1.34 and off by default, so on most
clusters ``status.createdBy`` would stay empty. This answers the same question the policy does,
from the operator's HTTPS server: on CREATE of a GeneratedProject or a RepositoryExport, set the
``projectgen.io/created-by`` annotation to ``request.userInfo.username``, overwriting whatever the
request carried. Changing it later is refused by the same in-tree ValidatingAdmissionPolicy
(admissionregistration.k8s.io/v1, GA since 1.30) that the policy install uses, so immutability does
not depend on the operator being up.

The webhook is unauthenticated on purpose, like every admission webhook without an admission
kubeconfig: it has no side effects and tells a caller nothing but the patch it would apply.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

from aiohttp import web

from projectgen.api.v1alpha1 import GROUP, generatedproject, repositoryexport
from projectgen.api.v1alpha1.common import CREATED_BY_ANNOTATION

PATH = "/admission/created-by"
"""Where the MutatingWebhookConfiguration of ``manifests/created-by-webhook/`` points."""
STAMPED = frozenset({generatedproject.PLURAL, repositoryexport.PLURAL})
"""The resources whose creator is recorded: the same list as the policies' resourceRules."""
MAX_REVIEW_BYTES = 4 * 1024 * 1024  # the API server's own request limit is 3 MiB
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


async def handle(request: web.Request) -> web.Response:
    """POST /admission/created-by."""
    if request.content_length is not None and request.content_length > MAX_REVIEW_BYTES:
        return web.json_response({"message": "AdmissionReview too large"}, status=413)
    try:
        raw = await request.content.read(MAX_REVIEW_BYTES + 1)
        if len(raw) > MAX_REVIEW_BYTES:
            return web.json_response({"message": "AdmissionReview too large"}, status=413)
        body = json.loads(raw)
        if not isinstance(body, dict):
            raise BadReview("expected a JSON object")
        answer = review(body)
    except (ValueError, UnicodeDecodeError) as exc:  # BadReview and json.JSONDecodeError are ValueErrors
        return web.json_response({"message": f"bad AdmissionReview: {exc}"}, status=400)
    log.debug("createdBy review %s: allowed=%s", answer["response"]["uid"], answer["response"]["allowed"])
    return web.json_response(answer)


def add_routes(app: web.Application) -> None:
    app.router.add_post(PATH, handle)
