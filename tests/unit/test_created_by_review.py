"""The createdBy webhook's decision, applied with a real JSON Patch library the way the API server applies it."""

from __future__ import annotations

import base64
import json
from typing import Any

import jsonpatch
import pytest

from projectgen.serving.admission import BadReview, review

USER = "system:serviceaccount:ci:argocd"


def request(obj: dict[str, Any], operation: str = "CREATE", **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "resource": {"group": "projectgen.io", "version": "v1alpha1", "resource": "generatedprojects"},
            "operation": operation,
            "userInfo": {"username": USER, "groups": ["system:serviceaccounts"]},
            "object": obj,
            **extra,
        },
    }


def admitted(obj: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    response = review(request(obj, **kwargs))["response"]
    assert response["uid"] == "705ab4f5-6393-11e8-b7cc-42010a800002" and response["allowed"] is True
    if "patch" not in response:
        return obj
    assert response["patchType"] == "JSONPatch"
    patch = json.loads(base64.b64decode(response["patch"]))
    result: dict[str, Any] = jsonpatch.apply_patch(obj, patch)
    return result


@pytest.mark.parametrize(
    "metadata",
    [
        {"name": "p"},
        {"name": "p", "annotations": {}},
        {"name": "p", "annotations": {"team": "billing"}},
        {"name": "p", "annotations": {"projectgen.io/created-by": "mallory", "team": "billing"}},
        {"name": "p", "annotations": {"projectgen.io/created-by": USER}},
    ],
)
def test_create_stamps_the_requesting_user_and_keeps_other_annotations(metadata: dict[str, Any]) -> None:
    obj = {"apiVersion": "projectgen.io/v1alpha1", "kind": "GeneratedProject", "metadata": metadata}
    result = admitted(obj)
    annotations = result["metadata"]["annotations"]
    assert annotations["projectgen.io/created-by"] == USER
    others = {k: v for k, v in (metadata.get("annotations") or {}).items() if k != "projectgen.io/created-by"}
    assert {k: v for k, v in annotations.items() if k != "projectgen.io/created-by"} == others


@pytest.mark.parametrize(
    ("operation", "extra"),
    [
        ("UPDATE", {}),
        ("DELETE", {}),
        ("CREATE", {"subResource": "status"}),
        (
            "CREATE",
            {"resource": {"group": "projectgen.io", "version": "v1alpha1", "resource": "repositoryexports"}},
        ),
    ],
)
def test_other_requests_pass_untouched(operation: str, extra: dict[str, Any]) -> None:
    obj = {"metadata": {"name": "p", "annotations": {"projectgen.io/created-by": "mallory"}}}
    body = request(obj, operation)
    body["request"].update(extra)
    response = review(body)["response"]
    assert response == {"uid": body["request"]["uid"], "allowed": True}


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {"uid": "x"}},
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"},
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": 7}},
    ],
)
def test_not_a_review_is_an_error(body: dict[str, Any]) -> None:
    with pytest.raises(BadReview):
        review(body)
