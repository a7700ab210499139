"""What a restart may skip, and which exports need no wake-up: decided from the object alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from projectgen.handlers.settled import export_settled, project_settled, reflected_project_state, reflects


def _obj(
    status: dict[str, Any], *, generation: int = 2, spec: dict[str, Any] | None = None, **meta: Any
) -> dict[str, Any]:
    return {"metadata": {"generation": generation, **meta}, "spec": spec or {}, "status": status}


def _ready(reason: str) -> list[dict[str, str]]:
    return [{"type": "Ready", "status": "False", "reason": reason}]


def test_a_project_is_settled_only_at_its_current_generation(tmp_path: Path) -> None:
    (tmp_path / "tree").mkdir()
    done = {"phase": "Completed", "observedGeneration": 2, "outputDirectory": str(tmp_path)}
    assert project_settled(_obj(done))
    assert not project_settled(_obj({**done, "observedGeneration": 1}))
    assert not project_settled(_obj({**done, "outputDirectory": str(tmp_path / "gone")}))
    assert project_settled(_obj({"phase": "Failed", "observedGeneration": 2}))
    assert project_settled(_obj({"phase": "Archived", "observedGeneration": 2}, spec={"archived": True}))
    assert not project_settled(_obj({"phase": "Archived", "observedGeneration": 2}, spec={"archived": False}))
    for phase in ("Pending", "Generating"):  # killed mid-work: do it again
        assert not project_settled(_obj({"phase": phase, "observedGeneration": 2}))


def test_an_archive_export_is_settled_only_with_its_archive(tmp_path: Path) -> None:
    archive = tmp_path / "p.zip"
    done = {"phase": "Completed", "observedGeneration": 2, "archivePath": str(archive)}
    assert not export_settled(_obj(done, spec={"exportType": "zip"}))
    archive.write_bytes(b"PK")
    assert export_settled(_obj(done, spec={"exportType": "zip"}))
    assert export_settled(
        _obj({"phase": "Completed", "observedGeneration": 2}, spec={"exportType": "github"})
    )
    assert export_settled(_obj({"phase": "Failed", "observedGeneration": 2}, spec={"exportType": "zip"}))
    assert not export_settled(
        _obj({"phase": "Exporting", "observedGeneration": 2}, spec={"exportType": "zip"})
    )
    assert not export_settled(_obj({**done, "observedGeneration": 1}, spec={"exportType": "zip"}))


OWNER = [{"kind": "GeneratedProject", "uid": "u1", "name": "p"}]


def test_an_export_that_reflects_its_project_needs_no_wake_up() -> None:
    done = _obj(
        {"phase": "Completed", "observedGeneration": 2, "exportedContentHash": "h1"}, ownerReferences=OWNER
    )
    assert reflects(reflected_project_state(done), "u1/Completed/h1")
    assert not reflects(reflected_project_state(done), "u1/Completed/h2")  # regenerated: export again
    assert not reflects(reflected_project_state(done), "u2/Completed/h1")  # a new project of that name
    failed = _obj(
        {"phase": "Failed", "observedGeneration": 2, "conditions": _ready("ProjectFailed")},
        ownerReferences=OWNER,
    )
    assert reflects(reflected_project_state(failed), "u1/Failed/h0")
    assert not reflects(reflected_project_state(failed), "u1/Completed/h1")
    archived = _obj(
        {"phase": "Failed", "observedGeneration": 2, "conditions": _ready("ProjectArchived")},
        ownerReferences=OWNER,
    )
    assert reflects(reflected_project_state(archived), "u1/Archived/")


def test_an_export_that_says_nothing_settled_is_woken() -> None:
    pending = _obj({"phase": "Pending", "observedGeneration": 2}, ownerReferences=OWNER)
    assert reflected_project_state(pending) is None and not reflects(None, "u1/Completed/h1")
    stale = _obj(
        {"phase": "Completed", "observedGeneration": 1, "exportedContentHash": "h1"}, ownerReferences=OWNER
    )
    assert reflected_project_state(stale) is None
    orphan = _obj({"phase": "Completed", "observedGeneration": 2, "exportedContentHash": "h1"})
    assert reflected_project_state(orphan) is None
    own_failure = _obj(
        {"phase": "Failed", "observedGeneration": 2, "conditions": _ready("ArchiveFailed")},
        ownerReferences=OWNER,
    )
    assert reflected_project_state(own_failure) is None
