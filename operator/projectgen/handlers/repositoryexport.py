"""Reconcile one RepositoryExport: read its project, let `decide` say what to do, then do it.

The decision is `exportdecision.decide` (pure, tested without a cluster); this module reads what it
needs from the API server and the volume, and carries the decision out: a status patch, an Event,
an archive written or a repository pushed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kopf
from pydantic import ValidationError

from projectgen import metrics, outbound
from projectgen.api.v1alpha1 import RepositoryExportPhase, RepositoryExportSpec
from projectgen.api.v1alpha1.generatedproject import PLURAL as PROJECT_PLURAL
from projectgen.api.v1alpha1.repositoryexport import (
    ARCHIVE_TYPES,
    PLURAL,
    PublishConfig,
    RequestState,
    UpdateStrategy,
)
from projectgen.api.validation import validation_message
from projectgen.export.archive import ArchiveError, ArchiveMember, write_archive
from projectgen.export.publish import (
    DEFAULT_AUTHOR,
    GitHubApp,
    PublishError,
    PublishRequest,
    PublishResult,
    PublishSettings,
    publish,
    read_request,
)
from projectgen.export.publish.githubapp import app_from_secret
from projectgen.export.update.record import TemplateRef, template_refs
from projectgen.generation.manifest import Manifest
from projectgen.handlers import handled
from projectgen.handlers.context import Context
from projectgen.handlers.exportdecision import (
    PROJECT_STATE_ANNOTATION,
    UNSETTLED,
    Action,
    decide,
    owner_metadata,
)
from projectgen.handlers.finalizer import finalize
from projectgen.handlers.kube import ApiUnavailable, Forbidden, Kube, SecretMissing
from projectgen.handlers.retry import retry_delay
from projectgen.handlers.status import State, now
from projectgen.handlers.writer import StatusWriter
from projectgen.serving.download import download_path
from projectgen.storage import MANIFEST, TREE, Storage


@dataclass(frozen=True)
class Job:
    """One export to carry out: what `_archive` and `_publish` need, in one value."""

    body: kopf.Body
    spec: RepositoryExportSpec
    project_name: str
    content_hash: str
    """The project's contentHash this export is of (exportedContentHash once done)."""
    tree: Path
    manifest: Manifest
    kube: Kube
    write: StatusWriter
    storage: Storage
    outbound: outbound.PolicySource
    retry: int
    templates: tuple[TemplateRef, ...] = ()
    """What the project's template sources resolved to for this render (its status.templates)."""


def reconcile(
    ctx: Context,
    body: kopf.Body,
    patch: kopf.Patch,
    *,
    retry: int,
    logger: kopf.Logger,
    resuming: bool = False,
    lookup: Callable[[str], dict[str, Any] | None] | None = None,
) -> metrics.Outcome:
    """Carry out what `decide` says; says how it ended. Raises kopf.TemporaryError to be retried.

    `lookup`: the project by name as the operator's watch last saw it (kopf's index), instead of
    a GET per reconcile; a stale answer is healed by the wake-up its next event sends."""
    meta = body["metadata"]
    status = dict(body.get("status") or {})
    kube = Kube(meta["namespace"])
    write = StatusWriter(body, PLURAL, patch)

    try:
        spec = RepositoryExportSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        write.fail("InvalidSpec", validation_message(exc))
        return metrics.Outcome.FAILED

    project_name = spec.generated_project_ref.name
    finalize(body, patch)
    try:
        project = kube.get_object(PROJECT_PLURAL, project_name) if lookup is None else lookup(project_name)
    except (ApiUnavailable, Forbidden) as exc:
        raise kopf.TemporaryError(str(exc), delay=retry_delay(retry)) from None
    if project is not None:
        owner = owner_metadata(body, project)
        if owner:
            patch.metadata.update(owner)
    decision = decide(
        spec,
        project,
        status,
        generation=write.generation,
        archive_on_disk=Path(status.get("archivePath") or "/nonexistent").is_file(),
    )

    if decision.action is Action.WAIT:
        write(RepositoryExportPhase.PENDING, State.WAITING, decision.reason, decision.message)
        # The wake-up comes when the project settles in a state other than the one recorded here; a
        # render that ends where it started (same contentHash) would wake no one: forget that state.
        if decision.project_at_work and (meta.get("annotations") or {}).get(PROJECT_STATE_ANNOTATION) not in (
            None,
            UNSETTLED,
        ):
            patch.metadata.annotations[PROJECT_STATE_ANNOTATION] = UNSETTLED
        return metrics.Outcome.PENDING
    if decision.action is Action.FAIL:
        write.fail(decision.reason, decision.message, event=False)
        return metrics.Outcome.FAILED
    if decision.action is Action.CURRENT:
        return metrics.Outcome.CURRENT
    if handled.finished(meta["uid"], write.generation, decision.content_hash):
        logger.debug("this content is exported already (a late event of our own writes)")
        return metrics.Outcome.CURRENT

    assert decision.output is not None  # EXPORT always names the project's directory
    try:
        manifest = Manifest.load(decision.output / MANIFEST)
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
    job = Job(
        body=body,
        spec=spec,
        project_name=project_name,
        content_hash=decision.content_hash,
        tree=decision.output / TREE,
        manifest=manifest,
        kube=kube,
        write=write,
        storage=ctx.storage,
        outbound=ctx.outbound,
        retry=retry,
        templates=template_refs(((project or {}).get("status") or {}).get("templates") or []),
    )
    with metrics.exporting(spec.export_type):
        if spec.export_type in ARCHIVE_TYPES:
            return _archive(job)
        return _publish(job)


def _archive(job: Job) -> metrics.Outcome:
    meta = job.body["metadata"]
    prefix = job.spec.repository_name or job.project_name
    target = job.storage.export_path(
        meta["namespace"], meta["name"], meta["uid"], f"{prefix}.{job.spec.export_type}"
    )
    try:
        result = write_archive(
            job.tree,
            [ArchiveMember.from_project_file(f) for f in job.manifest.files],
            job.spec.export_type,
            target,
            prefix=prefix,
            level=job.spec.compression_level,
        )
    except ArchiveError as exc:
        current = job.kube.get_object(PROJECT_PLURAL, job.project_name) or {}
        if ((current.get("status") or {}).get("contentHash")) != job.content_hash:
            job.write(
                RepositoryExportPhase.PENDING,
                State.WAITING,
                "ProjectChanged",
                f"GeneratedProject {job.project_name!r} changed during export",
            )
            raise kopf.TemporaryError("project changed during export", delay=1) from None
        job.write.fail("ArchiveFailed", str(exc))
        return metrics.Outcome.FAILED
    except OSError as exc:
        message = f"writing the archive failed: {exc.strerror or exc}"
        job.write.fail("ArchiveFailed", message)
        raise kopf.TemporaryError(message, delay=retry_delay(job.retry)) from None
    # Older archives (another repositoryName) and temp files of a run that was killed.
    for sibling in target.parent.iterdir():
        if sibling != result.path and sibling.is_file():
            sibling.unlink(missing_ok=True)
    for warning in result.warnings:
        kopf.warn(job.body, reason="Warning", message=warning)
    message = f"{result.entries} entries, {result.size} bytes"
    job.write.last(
        RepositoryExportPhase.COMPLETED,
        State.READY,
        "Completed",
        message,
        archivePath=str(result.path),
        archiveSize=result.size,
        archiveSha256=result.sha256,
        downloadPath=download_path(meta["namespace"], meta["name"]),
        exportedContentHash=job.content_hash,
        completedAt=now(),
    )
    handled.finish(meta["uid"], job.write.generation, job.content_hash)
    kopf.info(job.body, reason="Completed", message=f"archive written: {result.path} ({message})")
    metrics.exported(job.spec.export_type, result.size)
    return metrics.Outcome.COMPLETED


def _access(
    kube: Kube, config: PublishConfig, policy: outbound.PolicySource
) -> tuple[str, GitHubApp | None, outbound.Guard]:
    """The token (or GitHub App) from the Secret, and the outbound policy of the namespace.
    Raises SecretMissing, PublishError (a malformed app key), ApiUnavailable, Forbidden."""
    ref = config.credentials_secret_ref
    keys = config.github_app
    if keys is None:
        token, app = kube.secret_value(ref.name, ref.key) or "", None
    else:
        values = kube.secret_values(
            ref.name, [keys.app_id_key, keys.private_key_key], optional=[keys.installation_id_key]
        )
        token = ""
        app = app_from_secret(
            values[keys.app_id_key], values[keys.private_key_key], values.get(keys.installation_id_key)
        )
    return token, app, policy.guard(kube.namespace, kube.namespace_labels)


def _publish(job: Job) -> metrics.Outcome:
    config = job.spec.config
    assert config is not None and job.spec.repository_name is not None  # the model guarantees both
    try:
        token, app, guard = _access(job.kube, config, job.outbound)
    except SecretMissing as exc:
        message = f"credentials: {exc}; create it in this namespace"
        job.write.fail("CredentialsMissing", message)
        raise kopf.TemporaryError(message, delay=retry_delay(job.retry + 2)) from None
    except (
        PublishError
    ) as exc:  # a malformed app ID or key: retried like a missing Secret, whose fix triggers nothing
        job.write.fail("CredentialsInvalid", f"credentials: {exc}")
        raise kopf.TemporaryError(str(exc), delay=retry_delay(job.retry + 2)) from None
    except (ApiUnavailable, Forbidden) as exc:
        raise kopf.TemporaryError(str(exc), delay=retry_delay(job.retry)) from None
    author = (config.author.name, config.author.email) if config.author else DEFAULT_AUTHOR
    status = job.body.get("status") or {}
    people = config.pull_request
    request = PublishRequest(
        host=job.spec.export_type,
        api_url=config.api_url,
        token=token,
        github_app=app,
        token_type=config.token_type,
        owner=config.owner,
        name=job.spec.repository_name,
        description=config.description,
        visibility=config.visibility,
        topics=list(config.topics or []),
        default_branch=config.default_branch,
        commit_message=config.commit_message or f"Generated by projectgen from {job.project_name}",
        author_name=author[0],
        author_email=author[1],
        if_exists=config.if_exists,
        claimed=status.get("repository"),
        retries=job.retry,
        tree=job.tree,
        files=job.manifest.files,
        content_hash=job.content_hash,
        guard=guard,
        export_name=job.body["metadata"]["name"],
        export_namespace=job.body["metadata"]["namespace"],
        created_by=status.get("createdBy"),
        update_strategy=UpdateStrategy(job.spec.update.strategy)
        if job.spec.update
        else UpdateStrategy.PULL_REQUEST,
        delivered_commit=status.get("commitSha"),
        delivered_content_hash=status.get("deliveredContentHash"),
        team_owned=job.manifest.skip_if_exists,
        path=config.path,
        request_labels=list(people.labels or []) if people else (),
        request_reviewers=list(people.reviewers or []) if people else (),
        request_assignees=list(people.assignees or []) if people else (),
        templates=job.templates,
    )

    def claim(full_name: str) -> None:
        job.write(
            RepositoryExportPhase.EXPORTING,
            State.WORKING,
            "CreatingRepository",
            f"creating repository {full_name}",
            repository=full_name,
        )

    try:
        # The git work directory goes to the volume's staging area, which start-up empties: a crash
        # mid-push must not leave a copy of the project in the pod's /tmp.
        result = publish(
            request,
            claim=claim,
            settings=PublishSettings(work_root=job.storage.staging_root),
            on_retry=lambda: metrics.publish_retried(job.spec.export_type),
        )
    except PublishError as exc:
        message = str(exc)
        metrics.publish_failed(job.spec.export_type, retryable=not exc.permanent)
        if exc.permanent:
            job.write.fail("PublishFailed", message)
            return metrics.Outcome.FAILED
        metrics.publish_retried(job.spec.export_type)  # kopf retries it after the delay
        job.write(
            RepositoryExportPhase.EXPORTING,
            State.WORKING,
            "Retrying",
            f"temporary failure, retrying: {message}",
        )
        raise kopf.TemporaryError(message, delay=retry_delay(job.retry, exc.retry_after)) from None
    for warning in result.warnings:
        kopf.warn(job.body, reason="Warning", message=warning)
    if result.reason:
        kopf.warn(job.body, reason="PushDeclined", message=result.reason)
    delivered, day_two = _delivery_status(result, job.body.get("status") or {})
    job.write.last(
        RepositoryExportPhase.COMPLETED,
        State.READY,
        "Completed",
        delivered,
        repository=result.repository,
        repositoryUrl=result.repository_url,
        commitSha=result.commit_sha,
        exportedContentHash=job.content_hash,
        **day_two,
        completedAt=now(),
    )
    handled.finish(job.body["metadata"]["uid"], job.write.generation, job.content_hash)
    kopf.info(
        job.body,
        reason="Completed",
        message=f"published to {result.repository_url} at {result.commit_sha[:12]}",
    )
    if result.pushed:  # the same tree again pushes nothing: no bytes exported
        metrics.exported(job.spec.export_type, job.manifest.total_size)
    return metrics.Outcome.COMPLETED


def request_times(
    known: Mapping[str, Any], number: int, *, is_open: bool, conflicted: bool
) -> dict[str, Any]:
    """status.pullRequest's openedAt and conflictedSince: kept from the status while it describes the
    same request (and, for conflictedSince, while it still has conflicts), else now or unset. The
    fleet metrics and the UpdateRequestConflicted alert count the days from them."""
    same = known.get("number") == number
    opened = known.get("openedAt") if same else None
    since = known.get("conflictedSince") if same and known.get("state") == str(RequestState.OPEN) else None
    return {
        "openedAt": opened or (now() if is_open else None),
        "conflictedSince": (since or now()) if is_open and conflicted else None,
    }


def _delivery_status(result: PublishResult, status: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The Ready message and the day-two status fields. Ready stays True while a request is open:
    the render was delivered as far as the export can take it, and a GitOps pipeline waiting on
    the export must not wait for a human review (status.pullRequest says what is left to do)."""
    fields: dict[str, Any] = {}
    if result.delivered_content_hash:
        fields["deliveredContentHash"] = result.delivered_content_hash
    request = result.pull_request
    is_open = request is not None and request.state == RequestState.OPEN
    conflicts = f", {len(result.conflicts)} conflicts" if result.conflicts and is_open else ""
    if request is not None:
        known = status.get("pullRequest") or {}
        fields["pullRequest"] = {
            "url": request.url or None,
            "number": request.number,
            "state": str(request.state),
            "headSha": request.head_sha,
            "conflictedFiles": [c.rpartition(" (")[0] for c in result.conflicts][:100] if is_open else [],
            **request_times(known, request.number, is_open=is_open, conflicted=bool(result.conflicts)),
        }
        why = f" ({result.reason})" if result.reason else ""
        return f"pull request #{request.number} {request.state}{conflicts}: {request.url}{why}", fields
    if result.request_branch and result.request_head:
        return f"update merged onto branch {result.request_branch} at {result.request_head[:12]}", fields
    return f"pushed {result.commit_sha[:12]} to {result.repository_url}", fields


def polls_request(body: Mapping[str, Any]) -> bool:
    """The export has an open request and nothing else in flight: a timer reads its state."""
    status = body.get("status") or {}
    return (
        (status.get("pullRequest") or {}).get("state") == str(RequestState.OPEN)
        and status.get("phase") == str(RepositoryExportPhase.COMPLETED)
        and status.get("observedGeneration") == (body.get("metadata") or {}).get("generation")
    )


def poll_request(ctx: Context, body: kopf.Body, *, logger: kopf.Logger) -> None:
    """Read the open request's state between reconciles, in one GET: a merge or a close done on
    the forge shows in status (and the Ready message) without anyone touching the export. A
    failure is logged and left to the next tick: the poll never fails the export."""
    meta, status = body["metadata"], dict(body.get("status") or {})
    known = dict(status.get("pullRequest") or {})
    try:
        spec = RepositoryExportSpec.model_validate(body.get("spec") or {})
    except ValidationError:
        return
    if spec.config is None or not status.get("repository") or not known.get("number"):
        return
    kube = Kube(meta["namespace"])
    try:
        token, app, guard = _access(kube, spec.config, ctx.outbound)
        request = read_request(
            PublishRequest(
                host=spec.export_type,
                api_url=spec.config.api_url,
                token=token,
                github_app=app,
                token_type=spec.config.token_type,
                name=spec.repository_name or "",
                tree=Path(),
                files=(),
                content_hash="",
                guard=guard,
            ),
            status["repository"],
            int(known["number"]),
            settings=PublishSettings(work_root=ctx.storage.staging_root),
        )
    except (SecretMissing, PublishError, ApiUnavailable, Forbidden) as exc:
        logger.info("reading pull request #%s failed, next poll retries: %s", known["number"], exc)
        return
    if str(request.state) == known.get("state"):
        return
    current = kube.get_object(PLURAL, meta["name"]) or {}
    if not polls_request(current) or (current.get("status") or {}).get("pullRequest") != known:
        return  # a reconcile moved on meanwhile: its status stands
    fields: dict[str, Any] = {
        "pullRequest": {
            **known,
            "state": str(request.state),
            "headSha": request.head_sha,
            "conflictedFiles": [],
            "conflictedSince": None,
        }
    }
    if request.state == RequestState.MERGED and request.content_hash:
        fields["deliveredContentHash"] = request.content_hash
    message = f"pull request #{request.number} {request.state}: {request.url}"
    StatusWriter(body, PLURAL)(RepositoryExportPhase.COMPLETED, State.READY, "Completed", message, **fields)
    kopf.info(body, reason="PullRequest", message=message)


def delete(ctx: Context, body: kopf.Body) -> None:
    """Remove the archive. A published repository is left alone: deleting an export never deletes data."""
    meta = body["metadata"]
    handled.forget(meta["uid"])
    ctx.storage.remove_export(meta["namespace"], meta["name"], meta["uid"])
