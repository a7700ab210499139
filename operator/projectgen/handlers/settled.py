"""What a restart may skip: resources whose status already describes their current spec.

kopf calls the resume handlers for every object it lists at start-up. For a settled object
(Completed with its files on disk, Failed, Archived, at the current generation) the operator must
do nothing: no render, no archive, no push, no write, and not even a read of another object, so
that a restart over thousands of them costs no more than the listing and new work is not queued
behind them. Failed is settled too: a failure is permanent (Stalled=True) until the spec changes;
what may heal (an API error, a missing Secret or ConfigMap) is retried by kopf through a temporary
error, and an export that failed with its project is woken when the project changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

ARCHIVE_TYPES = ("zip", "tar", "tar.gz")


def _current(body: Any) -> dict[str, Any] | None:
    status = dict(body.get("status") or {})
    if status.get("observedGeneration") != body["metadata"].get("generation"):
        return None
    return status


def project_settled(body: Any) -> bool:
    status = _current(body)
    if status is None:
        return False
    phase = status.get("phase")
    if phase == "Failed":
        return True
    if phase == "Archived":
        return bool((body.get("spec") or {}).get("archived"))
    if phase == "Completed" and status.get("outputDirectory"):
        return (Path(status["outputDirectory"]) / "tree").is_dir()
    return False


def export_settled(body: Any) -> bool:
    status = _current(body)
    if status is None:
        return False
    phase = status.get("phase")
    if phase == "Failed":
        return True
    if phase != "Completed":
        return False
    if (body.get("spec") or {}).get("exportType") in ARCHIVE_TYPES:
        return Path(status.get("archivePath") or "/nonexistent").is_file()
    return True


def reflected_project_state(body: Any) -> str | None:
    """The project signature (see exportdecision.project_signature) an export's status already
    reflects, or a prefix of it ending in '/'; None when its status says nothing settled.

    Waking an export whose status already reflects its project (after a restart, or when the export
    finished before the project's event arrived) would be a PATCH and a reconcile for nothing."""
    status = _current(body)
    if status is None:
        return None
    owner = next(
        (
            r.get("uid")
            for r in body["metadata"].get("ownerReferences") or []
            if r.get("kind") == "GeneratedProject"
        ),
        None,
    )
    if not owner:
        return None
    if status.get("phase") == "Completed" and status.get("exportedContentHash"):
        return f"{owner}/Completed/{status['exportedContentHash']}"
    reason = next((c.get("reason") for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    if status.get("phase") == "Failed" and reason == "ProjectFailed":
        return f"{owner}/Failed/"
    if status.get("phase") == "Failed" and reason == "ProjectArchived":
        return f"{owner}/Archived/"
    return None


def reflects(reflected: str | None, signature: str) -> bool:
    if reflected is None:
        return False
    return signature.startswith(reflected) if reflected.endswith("/") else signature == reflected
