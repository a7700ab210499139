"""Reconcile one RepositoryExport: wait for its project, then archive or publish its tree."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kopf
from pydantic import ValidationError

from projectgen.api.v1alpha1 import (
    GeneratedProjectPhase,
    RepositoryExportPhase,
    RepositoryExportSpec,
)
from projectgen.api.v1alpha1.generatedproject import KIND as PROJECT_KIND
from projectgen.api.v1alpha1.generatedproject import PLURAL as PROJECT_PLURAL
from projectgen.api.v1alpha1.repositoryexport import ARCHIVE_TYPES, PLURAL
from projectgen.api.validation import validation_message
from projectgen.export.archive import ArchiveError, ArchiveMember, write_archive
from projectgen.export.publish import PublishError, PublishRequest, PublishSettings, publish
from projectgen.generation.manifest import Manifest
from projectgen.handlers.context import Context
from projectgen.handlers.kube import ApiUnavailable, Forbidden, Kube, SecretMissing
from projectgen.handlers.retry import retry_delay
from projectgen.handlers.status import State, now
from projectgen.handlers.writer import StatusWriter
from projectgen.storage import MANIFEST, TREE, Storage

PROJECT_LABEL = "projectgen.io/generated-project"
# Not under `projectgen.io/`: kopf leaves its own prefix out of the diff, and this must trigger an update.
PROJECT_STATE_ANNOTATION = "project.projectgen.io/state"
UNSETTLED = "unsettled"
DEFAULT_AUTHOR = ("projectgen", "projectgen@users.noreply.local")


def owner_metadata(body: kopf.Body, project: dict[str, Any]) -> dict[str, Any] | None:
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
    meta = body["metadata"]
    refs = [r for r in meta.get("ownerReferences") or [] if r.get("kind") != PROJECT_KIND]
    labels = meta.get("labels") or {}
    if (
        any(r.get("uid") == pmeta["uid"] for r in meta.get("ownerReferences") or [])
        and labels.get(PROJECT_LABEL) == pmeta["name"]
    ):
        return None
    return {"ownerReferences": [*refs, ref], "labels": {PROJECT_LABEL: pmeta["name"]}}


SETTLED = (GeneratedProjectPhase.COMPLETED, GeneratedProjectPhase.FAILED, GeneratedProjectPhase.ARCHIVED)


def project_signature(project: dict[str, Any]) -> str | None:
    """What an export depends on, once the project has settled; None while it is still at work.

    Exports are only woken for settled states: one wake-up per generation, not one per transition."""
    status = project.get("status") or {}
    if status.get("phase") not in SETTLED or status.get("observedGeneration") != project["metadata"].get(
        "generation"
    ):
        return None
    return f"{project['metadata'].get('uid', '')}/{status.get('phase', '')}/{status.get('contentHash', '')}"


def reconcile(
    ctx: Context,
    body: kopf.Body,
    patch: kopf.Patch,
    *,
    retry: int,
    logger: kopf.Logger,
    resuming: bool = False,
) -> None:
    meta = body["metadata"]
    generation = int(meta.get("generation") or 1)
    status = dict(body.get("status") or {})
    kube = Kube(meta["namespace"])
    write = StatusWriter(body, PLURAL)

    try:
        spec = RepositoryExportSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        message = validation_message(exc)
        write.fail("InvalidSpec", message)
        return

    project_name = spec.generated_project_ref.name
    try:
        project = kube.get_object(PROJECT_PLURAL, project_name)
    except (ApiUnavailable, Forbidden) as exc:
        raise kopf.TemporaryError(str(exc), delay=retry_delay(retry)) from None
    if project is None:
        write(
            RepositoryExportPhase.PENDING,
            State.WAITING,
            "WaitingForProject",
            f"waiting for GeneratedProject {project_name!r} to be created",
        )
        return
    owner = owner_metadata(body, project)
    if owner:
        patch.metadata.update(owner)

    pstatus = project.get("status") or {}
    pphase = pstatus.get("phase")
    if pphase == GeneratedProjectPhase.FAILED:
        reason = pstatus.get("errorMessage") or "no message"
        write.fail("ProjectFailed", f"GeneratedProject {project_name!r} failed: {reason}", event=False)
        return
    if pphase == GeneratedProjectPhase.ARCHIVED:
        message = f"GeneratedProject {project_name!r} is archived: its files are gone; set its spec.archived to false"
        write.fail("ProjectArchived", message, event=False)
        return
    project_generation = project["metadata"].get("generation")
    if pphase != GeneratedProjectPhase.COMPLETED or pstatus.get("observedGeneration") != project_generation:
        write(
            RepositoryExportPhase.PENDING,
            State.WAITING,
            "WaitingForProject",
            f"waiting for GeneratedProject {project_name!r} to complete",
        )
        # The wake-up comes when the project settles in a state other than the one recorded here; a
        # render that ends where it started (same contentHash) would wake no one: forget that state.
        if (meta.get("annotations") or {}).get(PROJECT_STATE_ANNOTATION) not in (None, UNSETTLED):
            patch.metadata.annotations[PROJECT_STATE_ANNOTATION] = UNSETTLED
        return

    content_hash = str(pstatus.get("contentHash") or "")
    output = Path(pstatus.get("outputDirectory") or "")
    if (
        status.get("phase") == RepositoryExportPhase.COMPLETED
        and status.get("observedGeneration") == generation
        and status.get("exportedContentHash") == content_hash
        and (
            spec.export_type not in ARCHIVE_TYPES
            or Path(status.get("archivePath") or "/nonexistent").is_file()
        )
    ):
        return

    try:
        manifest = Manifest.load(output / MANIFEST)
    except (OSError, ValueError) as exc:
        raise kopf.TemporaryError(
            f"the tree of GeneratedProject {project_name!r} is not readable yet ({exc.__class__.__name__})",
            delay=retry_delay(retry),
        ) from None

    write(
        RepositoryExportPhase.EXPORTING,
        State.WORKING,
        "Exporting",
        f"exporting {manifest.total_files} files as {spec.export_type}",
    )
    kopf.info(
        body, reason="Exporting", message=f"exporting GeneratedProject {project_name!r} as {spec.export_type}"
    )
    if spec.export_type in ARCHIVE_TYPES:
        _archive(ctx, body, spec, kube, write, manifest, output, project_name, content_hash, retry)
    else:
        _publish(body, spec, kube, write, manifest, output, project_name, content_hash, retry, ctx.storage)


def _archive(
    ctx: Context,
    body: kopf.Body,
    spec: RepositoryExportSpec,
    kube: Kube,
    write: StatusWriter,
    manifest: Manifest,
    output: Path,
    project_name: str,
    content_hash: str,
    retry: int,
) -> None:
    meta = body["metadata"]
    prefix = spec.repository_name or project_name
    target = ctx.storage.export_path(
        meta["namespace"], meta["name"], meta["uid"], f"{prefix}.{spec.export_type}"
    )
    try:
        result = write_archive(
            output / TREE,
            [ArchiveMember.from_project_file(f) for f in manifest.files],
            spec.export_type,
            target,
            prefix=prefix,
            level=spec.compression_level,
        )
    except ArchiveError as exc:
        current = kube.get_object(PROJECT_PLURAL, project_name) or {}
        if ((current.get("status") or {}).get("contentHash")) != content_hash:
            write(
                RepositoryExportPhase.PENDING,
                State.WAITING,
                "ProjectChanged",
                f"GeneratedProject {project_name!r} changed during export",
            )
            raise kopf.TemporaryError("project changed during export", delay=1) from None
        write.fail("ArchiveFailed", str(exc))
        return
    except OSError as exc:
        message = f"writing the archive failed: {exc.strerror or exc}"
        write.fail("ArchiveFailed", message)
        raise kopf.TemporaryError(message, delay=retry_delay(retry)) from None
    # Older archives (another repositoryName) and temp files of a run that was killed.
    for sibling in target.parent.iterdir():
        if sibling != result.path and sibling.is_file():
            sibling.unlink(missing_ok=True)
    for warning in result.warnings:
        kopf.warn(body, reason="Warning", message=warning)
    message = f"{result.entries} entries, {result.size} bytes"
    write(
        RepositoryExportPhase.COMPLETED,
        State.READY,
        "Completed",
        message,
        archivePath=str(result.path),
        archiveSize=result.size,
        archiveSha256=result.sha256,
        exportedContentHash=content_hash,
        completedAt=now(),
    )
    kopf.info(body, reason="Completed", message=f"archive written: {result.path} ({message})")


def _publish(
    body: kopf.Body,
    spec: RepositoryExportSpec,
    kube: Kube,
    write: StatusWriter,
    manifest: Manifest,
    output: Path,
    project_name: str,
    content_hash: str,
    retry: int,
    storage: Storage,
) -> None:
    config = spec.config
    assert config is not None and spec.repository_name is not None  # the model guarantees both
    ref = config.credentials_secret_ref
    try:
        token = kube.secret_value(ref.name, ref.key)
    except SecretMissing as exc:
        message = f"credentials: {exc}; create it in this namespace"
        write.fail("CredentialsMissing", message)
        raise kopf.TemporaryError(message, delay=retry_delay(retry + 2)) from None
    except (ApiUnavailable, Forbidden) as exc:
        raise kopf.TemporaryError(str(exc), delay=retry_delay(retry)) from None
    assert token is not None
    author = (config.author.name, config.author.email) if config.author else DEFAULT_AUTHOR
    status = body.get("status") or {}
    request = PublishRequest(
        host=spec.export_type,
        api_url=config.api_url,
        token=token,
        owner=config.owner,
        name=spec.repository_name,
        description=config.description,
        visibility=config.visibility,
        topics=list(config.topics or []),
        default_branch=config.default_branch,
        commit_message=config.commit_message or f"Generated by projectgen from {project_name}",
        author_name=author[0],
        author_email=author[1],
        if_exists=config.if_exists,
        claimed=status.get("repository"),
        tree=output / TREE,
        files=manifest.files,
        content_hash=content_hash,
    )

    def claim(full_name: str) -> None:
        write(
            RepositoryExportPhase.EXPORTING,
            State.WORKING,
            "CreatingRepository",
            f"creating repository {full_name}",
            repository=full_name,
        )

    try:
        # The git work directory goes to the volume's staging area, which start-up empties: a crash
        # mid-push must not leave a copy of the project in the pod's /tmp.
        result = publish(request, claim=claim, settings=PublishSettings(work_root=storage.staging_root))
    except PublishError as exc:
        message = str(exc)
        if exc.permanent:
            write.fail("PublishFailed", message)
            return
        write(
            RepositoryExportPhase.EXPORTING,
            State.WORKING,
            "Retrying",
            f"temporary failure, retrying: {message}",
        )
        raise kopf.TemporaryError(message, delay=retry_delay(retry, exc.retry_after)) from None
    for warning in result.warnings:
        kopf.warn(body, reason="Warning", message=warning)
    write(
        RepositoryExportPhase.COMPLETED,
        State.READY,
        "Completed",
        f"pushed {result.commit_sha[:12]} to {result.repository_url}",
        repository=result.repository,
        repositoryUrl=result.repository_url,
        commitSha=result.commit_sha,
        exportedContentHash=content_hash,
        completedAt=now(),
    )
    kopf.info(
        body, reason="Completed", message=f"published to {result.repository_url} at {result.commit_sha[:12]}"
    )


def delete(ctx: Context, body: kopf.Body) -> None:
    """Remove the archive. A published repository is left alone: deleting an export never deletes data."""
    meta = body["metadata"]
    ctx.storage.remove_export(meta["namespace"], meta["name"], meta["uid"])
