"""What a RepositoryExport should do next, decided from what the API server says. No kopf, no I/O.

`decide(spec, project, status)` looks at the export's spec, its GeneratedProject (as read from the
API server, or None) and the export's own status, and returns one of four answers: wait for the
project, fail, nothing to do (the status is current), or export. The handler reads, calls this, and
acts; the rules are tested here without a cluster.

An export follows its project only once the project has settled (Completed, Failed or Archived at
its current generation). While the project is at work again (a fix, a regeneration), the export is
Pending and waiting for it, whatever it said before: a failure of the project's previous
generation is not the export's answer any more.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from projectgen.api.v1alpha1 import GeneratedProjectPhase, RepositoryExportPhase, RepositoryExportSpec
from projectgen.api.v1alpha1.common import HANDLED_FIELD
from projectgen.api.v1alpha1.generatedproject import KIND as PROJECT_KIND
from projectgen.api.v1alpha1.repositoryexport import ARCHIVE_TYPES

PROJECT_LABEL = "projectgen.io/generated-project"
# Not under `projectgen.io/`: kopf leaves its own prefix out of the diff, and this must trigger an update.
PROJECT_STATE_ANNOTATION = "project.projectgen.io/state"
UNSETTLED = "unsettled"
"""The recorded project state while the project is at work: the next settled state differs from it."""
SETTLED = (GeneratedProjectPhase.COMPLETED, GeneratedProjectPhase.FAILED, GeneratedProjectPhase.ARCHIVED)


class Action(Enum):
    WAIT = "wait"
    """Pending: nothing to do until the project is created or settles."""
    FAIL = "fail"
    """Failed, because of the project; retrying will not help until the project changes."""
    CURRENT = "current"
    """The status already describes this spec and this content: nothing to do."""
    EXPORT = "export"
    """Archive or publish the project's tree."""


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str = ""
    message: str = ""
    project_at_work: bool = False
    """WAIT only: the project is rendering, so the recorded project state is to be forgotten."""
    content_hash: str = ""
    """EXPORT: the project's contentHash, recorded as exportedContentHash when done."""
    output: Path | None = None
    """EXPORT: the project's directory in the volume (tree/ and manifest.json)."""


def settled(project: dict[str, Any]) -> bool:
    """True when the project's status describes its current spec and it is not at work."""
    status = project.get("status") or {}
    return status.get("phase") in SETTLED and status.get("observedGeneration") == project["metadata"].get(
        "generation"
    )


def project_signature(project: dict[str, Any]) -> str | None:
    """What an export depends on, once the project has settled; None while it is still at work."""
    if not settled(project):
        return None
    status = project.get("status") or {}
    return f"{project['metadata'].get('uid', '')}/{status.get('phase', '')}/{status.get('contentHash', '')}"


def wake(signature: str | None, seen: str | None, export_phase: str | None) -> str | None:
    """The project state to record on an export (which wakes it), or None to leave it be.

    Every export is woken when its project settles in a state other than the one it recorded: one
    wake-up per generation. A Failed export is also woken when its project goes back to work, so
    that it stops reporting the old failure and waits for the new result.
    """
    if signature is None:
        signature = UNSETTLED if export_phase == RepositoryExportPhase.FAILED else None
    return signature if signature is not None and signature != seen else None


def decide(
    spec: RepositoryExportSpec,
    project: dict[str, Any] | None,
    status: dict[str, Any],
    *,
    generation: int,
    archive_on_disk: bool = False,
) -> Decision:
    """The next step of an export of `generation` whose status is `status`.

    `archive_on_disk`: the file named in status.archivePath exists (an archive export is current
    only then).
    """
    name = spec.generated_project_ref.name
    if project is None:
        return Decision(
            Action.WAIT, "WaitingForProject", f"waiting for GeneratedProject {name!r} to be created"
        )
    if not settled(project):
        return Decision(
            Action.WAIT,
            "WaitingForProject",
            f"waiting for GeneratedProject {name!r} to complete",
            project_at_work=True,
        )
    pstatus = project.get("status") or {}
    phase = pstatus.get("phase")
    if phase == GeneratedProjectPhase.FAILED:
        reason = pstatus.get("errorMessage") or "no message"
        return Decision(Action.FAIL, "ProjectFailed", f"GeneratedProject {name!r} failed: {reason}")
    if phase == GeneratedProjectPhase.ARCHIVED:
        return Decision(
            Action.FAIL,
            "ProjectArchived",
            f"GeneratedProject {name!r} is archived: its files are gone; set its spec.archived to false",
        )
    content_hash = str(pstatus.get("contentHash") or "")
    if (
        status.get("phase") == RepositoryExportPhase.COMPLETED
        and status.get("observedGeneration") == generation
        and status.get("exportedContentHash") == content_hash
        and (spec.export_type not in ARCHIVE_TYPES or archive_on_disk)
    ):
        return Decision(Action.CURRENT)
    return Decision(
        Action.EXPORT,
        "Exporting",
        content_hash=content_hash,
        output=Path(pstatus.get("outputDirectory") or ""),
    )


def owner_metadata(export: Mapping[str, Any], project: dict[str, Any]) -> dict[str, Any] | None:
    """The metadata patch that makes the project own the export and labels it; None when already so."""
    pmeta = project["metadata"]
    ref = {
        "apiVersion": project.get("apiVersion", "projectgen.io/v1alpha1"),
        "kind": PROJECT_KIND,
        "name": pmeta["name"],
        "uid": pmeta["uid"],
        "controller": True,
        "blockOwnerDeletion": False,
    }
    meta = export["metadata"]
    refs = [r for r in meta.get("ownerReferences") or [] if r.get("kind") != PROJECT_KIND]
    labels = meta.get("labels") or {}
    if (
        any(r.get("uid") == pmeta["uid"] for r in meta.get("ownerReferences") or [])
        and labels.get(PROJECT_LABEL) == pmeta["name"]
    ):
        return None
    return {"ownerReferences": [*refs, ref], "labels": {PROJECT_LABEL: pmeta["name"]}}


def project_view(project: Mapping[str, Any]) -> dict[str, Any]:
    """What `decide` and `owner_metadata` read of a project, for the operator's index: no spec,
    no file list (the index holds one per project, in memory)."""
    meta = project.get("metadata") or {}
    status = {k: v for k, v in (project.get("status") or {}).items() if k not in ("files", HANDLED_FIELD)}
    return {
        "apiVersion": project.get("apiVersion"),
        "metadata": {k: meta.get(k) for k in ("name", "namespace", "uid", "generation")},
        "status": status,
    }
