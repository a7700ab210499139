"""What an export does next, from its spec, its project and its status: no cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from projectgen.api.v1alpha1 import RepositoryExportSpec
from projectgen.handlers.exportdecision import (
    UNSETTLED,
    Action,
    decide,
    owner_metadata,
    project_signature,
    wake,
)

HASH = "a" * 64


def spec(export_type: str = "zip") -> RepositoryExportSpec:
    body: dict[str, Any] = {"generatedProjectRef": {"name": "demo"}, "exportType": export_type}
    if export_type in ("github", "gitlab"):
        body |= {"repositoryName": "demo", "config": {"credentialsSecretRef": {"name": "token"}}}
    return RepositoryExportSpec.model_validate(body)


def project(
    phase: str | None, *, generation: int = 1, observed: int | None = 1, **status: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "projectgen.io/v1alpha1",
        "metadata": {"name": "demo", "uid": "u-1", "generation": generation},
    }
    if phase is not None:
        body["status"] = {"phase": phase, "observedGeneration": observed, **status}
    return body


def completed(**status: Any) -> dict[str, Any]:
    return project("Completed", contentHash=HASH, outputDirectory="/data/projects/ns/demo/u-1/x", **status)


def exported(**status: Any) -> dict[str, Any]:
    return {
        "phase": "Completed",
        "observedGeneration": 3,
        "exportedContentHash": HASH,
        "archivePath": "/data/exports/ns/e/u/demo.zip",
        **status,
    }


def test_waits_until_the_project_exists() -> None:
    d = decide(spec(), None, {}, generation=1)
    assert d.action is Action.WAIT
    assert d.message == "waiting for GeneratedProject 'demo' to be created"
    assert not d.project_at_work


@pytest.mark.parametrize(
    "body",
    [
        project(None),
        project("Pending"),
        project("Generating"),
        project("Completed", generation=2, observed=1, contentHash=HASH),
    ],
    ids=["no-status", "pending", "generating", "completed-for-an-older-spec"],
)
def test_waits_while_the_project_is_at_work(body: dict[str, Any]) -> None:
    d = decide(spec(), body, exported(), generation=3, archive_on_disk=True)
    assert d.action is Action.WAIT
    assert d.reason == "WaitingForProject"
    assert d.message == "waiting for GeneratedProject 'demo' to complete"
    assert d.project_at_work


def test_a_failed_project_fails_the_export_with_its_message() -> None:
    d = decide(spec(), project("Failed", errorMessage="template refused: tasks"), {}, generation=1)
    assert (d.action, d.reason) == (Action.FAIL, "ProjectFailed")
    assert d.message == "GeneratedProject 'demo' failed: template refused: tasks"


def test_an_archived_project_fails_the_export() -> None:
    d = decide(spec(), project("Archived"), {}, generation=1)
    assert (d.action, d.reason) == (Action.FAIL, "ProjectArchived")
    assert "set its spec.archived to false" in d.message


@pytest.mark.parametrize("phase", ["Failed", "Archived"])
def test_a_project_at_work_again_after_a_failure_makes_the_export_wait(phase: str) -> None:
    """Once the failed (or archived) project is fixed, the old failure is not the export's answer."""
    failed_export = {
        "phase": "Failed",
        "observedGeneration": 1,
        "errorMessage": "GeneratedProject 'demo' failed: x",
    }
    # The spec was fixed; the project's status still shows the failure of the previous generation.
    fixed = project(phase, generation=2, observed=1, errorMessage="x")
    for body in (
        fixed,
        project("Generating", generation=2, observed=2),
        project("Pending", generation=2, observed=2),
    ):
        d = decide(spec(), body, failed_export, generation=1)
        assert d.action is Action.WAIT, body
        assert d.message == "waiting for GeneratedProject 'demo' to complete"
    d = decide(spec(), completed(), failed_export, generation=1)
    assert d.action is Action.EXPORT


def test_current_when_status_matches_spec_content_and_disk() -> None:
    assert (
        decide(spec(), completed(), exported(), generation=3, archive_on_disk=True).action is Action.CURRENT
    )
    # A forge export has no file to look for.
    assert decide(spec("github"), completed(), exported(), generation=3).action is Action.CURRENT


@pytest.mark.parametrize(
    ("status", "generation", "on_disk"),
    [
        ({}, 1, False),
        (exported(), 3, False),  # the archive was removed from the volume
        (exported(), 4, True),  # the export's spec changed
        (exported(exportedContentHash="b" * 64), 3, True),  # the project's content changed
        (exported(phase="Failed"), 3, True),
    ],
    ids=["new", "archive-gone", "spec-changed", "content-changed", "failed-before"],
)
def test_exports_otherwise(status: dict[str, Any], generation: int, on_disk: bool) -> None:
    d = decide(spec(), completed(), status, generation=generation, archive_on_disk=on_disk)
    assert d.action is Action.EXPORT
    assert d.content_hash == HASH
    assert d.output == Path("/data/projects/ns/demo/u-1/x")


def test_signature_only_for_a_settled_project() -> None:
    assert project_signature(completed()) == f"u-1/Completed/{HASH}"
    assert project_signature(project("Failed")) == "u-1/Failed/"
    assert project_signature(project("Generating")) is None
    assert project_signature(project("Failed", generation=2, observed=1)) is None


def test_wake() -> None:
    settled = f"u-1/Completed/{HASH}"
    assert wake(settled, None, "Pending") == settled
    assert wake(settled, settled, "Completed") is None  # already seen: one wake-up per generation
    assert wake("deleted", settled, "Completed") == "deleted"
    # A project at work again wakes only the exports that still report a failure, once.
    assert wake(None, "u-1/Failed/", "Failed") == UNSETTLED
    assert wake(None, UNSETTLED, "Failed") is None
    assert wake(None, settled, "Completed") is None
    assert wake(None, None, "Pending") is None


def test_owner_metadata() -> None:
    export: dict[str, Any] = {"metadata": {"name": "e", "ownerReferences": [{"kind": "Other", "uid": "o"}]}}
    meta = owner_metadata(export, completed())
    assert meta is not None
    assert meta["labels"] == {"projectgen.io/generated-project": "demo"}
    assert [r["uid"] for r in meta["ownerReferences"]] == ["o", "u-1"]
    assert meta["ownerReferences"][1]["controller"] is True
    export["metadata"] |= meta
    assert owner_metadata(export, completed()) is None
