"""The createdBy webhook's decision, applied with a real JSON Patch library the way the API server applies it."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import yaml

from projectgen.serving.admission import BadReview, review

USER = "system:serviceaccount:ci:argocd"
KINDS = [("GeneratedProject", "generatedprojects"), ("RepositoryExport", "repositoryexports")]
CREATED_BY = Path(__file__).resolve().parents[2] / "manifests" / "created-by"


def request(
    obj: dict[str, Any], operation: str = "CREATE", plural: str = "generatedprojects", **extra: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "resource": {"group": "projectgen.io", "version": "v1alpha1", "resource": plural},
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


@pytest.mark.parametrize(("kind", "plural"), KINDS)
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
def test_create_stamps_the_requesting_user_and_keeps_other_annotations(
    kind: str, plural: str, metadata: dict[str, Any]
) -> None:
    obj = {"apiVersion": "projectgen.io/v1alpha1", "kind": kind, "metadata": metadata}
    result = admitted(obj, plural=plural)
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
        ("CREATE", {"resource": {"group": "projectgen.io", "version": "v1alpha1", "resource": "exports"}}),
        ("CREATE", {"resource": {"group": "example.com", "version": "v1", "resource": "repositoryexports"}}),
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


@pytest.mark.parametrize("path", ["policy.yaml", "webhook/webhook.yaml", "immutable/immutable.yaml"])
def test_every_install_covers_both_kinds(path: str) -> None:
    """The policy, the webhook and the immutability rule name the same kinds as the webhook stamps:
    an export created through either install has its creator recorded, and kept."""
    matching = 0
    for doc in yaml.safe_load_all((CREATED_BY / path).read_text()):
        spec = doc.get("spec") or {}
        rules = (spec.get("matchConstraints") or {}).get("resourceRules") or []
        rules += [r for hook in doc.get("webhooks") or [] for r in hook["rules"]]
        if rules:  # each policy or webhook of the file, on its own
            matching += 1
            assert all(r["apiGroups"] == ["projectgen.io"] for r in rules)
            assert sorted(p for r in rules for p in r["resources"]) == sorted(plural for _, plural in KINDS)
    assert matching
