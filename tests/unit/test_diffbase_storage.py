"""kopf's diff base in status, read from the annotation older versions wrote (issue 26)."""

from __future__ import annotations

import json
from typing import Any

import kopf

from projectgen.handlers.diffbase import DIGESTS, CompactDiffBaseStorage
from projectgen.handlers.progress import GenerationalProgressStorage

LEGACY = "projectgen.io/last-handled-configuration"


def storage(limit: int = 64 * 1024) -> CompactDiffBaseStorage:
    progress = GenerationalProgressStorage(prefix="projectgen.io", tokens=[])
    return CompactDiffBaseStorage(
        prefix="projectgen.io", key="last-handled-configuration", progress=progress, limit=limit
    )


def body(
    spec: dict[str, Any], status: dict[str, Any] | None = None, annotations: dict[str, str] | None = None
) -> kopf.Body:
    raw: dict[str, Any] = {
        "apiVersion": "projectgen.io/v1alpha1",
        "kind": "GeneratedProject",
        "metadata": {"name": "p", "namespace": "ns", "generation": 1, "annotations": annotations or {}},
        "spec": spec,
    }
    if status is not None:
        raw["status"] = status
    return kopf.Body(raw)  # type: ignore[arg-type]


def test_the_diff_base_is_stored_in_status_only() -> None:
    s, b = storage(), body({"a": 1})
    patch = kopf.Patch()
    s.store(body=b, patch=patch, essence=s.build(body=b))
    assert json.loads(patch["status"]["lastHandledConfiguration"]) == {"spec": {"a": 1}}
    assert not patch.get("metadata"), "nothing in the metadata: no PATCH of its own"


def test_status_wins_and_the_annotation_of_an_older_version_is_read_until_then() -> None:
    s = storage()
    legacy = {LEGACY: json.dumps({"spec": {"a": 0}})}
    assert s.fetch(body=body({"a": 1}, annotations=legacy)) == {"spec": {"a": 0}}
    current = {"lastHandledConfiguration": json.dumps({"spec": {"a": 1}})}
    assert s.fetch(body=body({"a": 1}, status=current, annotations=legacy)) == {"spec": {"a": 1}}
    assert s.fetch(body=body({"a": 1})) is None


def test_a_settled_object_of_an_older_version_shows_no_change() -> None:
    """Its annotation matches its spec: kopf sees no diff, so a restart writes nothing."""
    s = storage()
    b = body({"a": 1}, annotations={LEGACY: json.dumps({"spec": {"a": 1}}), "other": "x"})
    assert s.fetch(body=b) == s.build(body=b)


def test_a_large_spec_is_stored_as_digests_that_still_tell_a_change() -> None:
    s = storage(limit=100)
    b = body({"files": "x" * 1000})
    patch = kopf.Patch()
    s.store(body=b, patch=patch, essence=s.build(body=b))
    stored = patch["status"]["lastHandledConfiguration"]
    assert stored.startswith(DIGESTS) and len(stored) < 200
    assert s.fetch(body=body({"files": "x" * 1000}, status={"lastHandledConfiguration": stored})) == s.build(
        body=b
    )
    changed = body({"files": "y" * 1000}, status={"lastHandledConfiguration": stored})
    assert s.fetch(body=changed) != s.build(body=changed)
