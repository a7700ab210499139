"""Reconcile one GeneratedProject: validate, render into staging, swap into place, report."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kopf
from pydantic import ValidationError

from projectgen import metrics
from projectgen.api.v1alpha1 import ConditionStatus, GeneratedProjectPhase, GeneratedProjectSpec
from projectgen.api.v1alpha1.generatedproject import PLURAL
from projectgen.api.validation import validation_message
from projectgen.generation.errors import GenerationError, SourceUnavailable
from projectgen.generation.follow import (
    CHECK_ANNOTATION,
    TEMPLATE_CHECKED,
    check_verdict,
    moved_events,
    read_annotation,
)
from projectgen.generation.manifest import Manifest
from projectgen.generation.render import TemplateOptions, render_project
from projectgen.generation.sandbox import Limits, RenderCancelled, SandboxKilled
from projectgen.generation.template import generation_clock
from projectgen.handlers import handled
from projectgen.handlers.context import Context
from projectgen.handlers.kube import ApiUnavailable, Forbidden, Kube
from projectgen.handlers.retry import retry_delay
from projectgen.handlers.status import State, now, set_condition, without_condition
from projectgen.handlers.writer import StatusWriter
from projectgen.storage import MANIFEST, TREE

log = logging.getLogger(__name__)


def is_current(body: kopf.Body | dict[str, Any]) -> bool:
    """True when status already describes the current spec and its tree is on disk."""
    status = body.get("status") or {}
    generation = body["metadata"].get("generation")
    if status.get("observedGeneration") != generation:
        return False
    if status.get("phase") == GeneratedProjectPhase.ARCHIVED:
        return bool((body.get("spec") or {}).get("archived"))
    if status.get("phase") != GeneratedProjectPhase.COMPLETED or not status.get("outputDirectory"):
        return False
    return (Path(status["outputDirectory"]) / TREE).is_dir()


def superseded(kube: Kube, name: str, uid: str, generation: int, every: float = 2.0) -> Callable[[], bool]:
    """A check, run while a template renders (at most every `every` s), that the resource still
    wants this render: not deleted, not being deleted, not changed since. kopf delivers the delete
    or the new spec only after this handler returns, so the render asks."""
    last = [time.monotonic()]

    def check() -> bool:
        if time.monotonic() - last[0] < every:
            return False
        last[0] = time.monotonic()
        try:
            current = kube.get_object(PLURAL, name)
        except (ApiUnavailable, Forbidden):
            return False
        if current is None:
            return True
        meta = current.get("metadata") or {}
        return bool(
            meta.get("uid") != uid
            or meta.get("deletionTimestamp")
            or int(meta.get("generation") or 1) != generation
        )

    return check


def reconcile(
    ctx: Context,
    body: kopf.Body,
    *,
    retry: int,
    logger: kopf.Logger,
    resuming: bool = False,
    moving: bool = False,
    patch: kopf.Patch | None = None,
) -> metrics.Outcome:
    """Render the spec (or archive, or fail with a message); says how it ended. Raises
    kopf.TemporaryError when it must be retried. `moving`: a render for a template that moved,
    which must not cost the project what it has: if it fails, the project is Completed as before."""
    meta = body["metadata"]
    namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
    generation = int(meta.get("generation") or 1)
    status = dict(body.get("status") or {})
    kube = Kube(namespace)  # the only namespace this resource can make the operator read

    if resuming and is_current(body):
        logger.debug("status is current; nothing to do")
        return metrics.Outcome.CURRENT
    if not moving and handled.finished(uid, generation):
        logger.debug("generation %d is rendered already (a late event of our own writes)", generation)
        return metrics.Outcome.CURRENT

    write = StatusWriter(body, PLURAL, patch)

    try:
        spec = GeneratedProjectSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        message = validation_message(exc)
        write.fail("InvalidSpec", message)
        metrics.render_failed(metrics.RenderFailure.INVALID_SPEC)
        return metrics.Outcome.FAILED

    if spec.archived:
        ctx.storage.remove_project(namespace, name, uid)
        write(
            GeneratedProjectPhase.ARCHIVED,
            State.READY,
            "Archived",
            "files removed from the volume; set spec.archived to false to regenerate",
            outputDirectory=None,
            files=None,
            filesTruncated=None,
        )
        kopf.info(body, reason="Archived", message="project archived: files removed from the volume")
        return metrics.Outcome.ARCHIVED

    # A retry of this generation (still waiting, or resumed mid-render) says nothing new.
    if (
        status.get("phase") not in (GeneratedProjectPhase.GENERATING, GeneratedProjectPhase.PENDING)
        or status.get("observedGeneration") != generation
    ):
        write(
            GeneratedProjectPhase.GENERATING,
            State.WORKING,
            "Generating",
            f"rendering {len(spec.sources)} source(s)",
        )
        kopf.info(body, reason="Generating", message=f"generation {generation} started")
    log.info("rendering %s/%s generation %d (attempt %d)", namespace, name, generation, retry + 1)

    try:
        with metrics.rendering(), ctx.storage.staging("gen") as staging:
            tree = staging / TREE
            tree.mkdir()
            guard = ctx.outbound.guard(namespace, kube.namespace_labels)
            templates = TemplateOptions(
                limits=Limits.from_settings(ctx.settings),
                clock=generation_clock(meta.get("creationTimestamp")),
                forbidden=(str(ctx.settings.data_dir),),
                should_stop=superseded(kube, name, uid, generation),
            )
            result = render_project(
                spec, tree, configmaps=kube.configmap, workdir=staging, templates=templates, guard=guard
            )
            manifest: Manifest = result.manifest
            manifest.dump(staging / MANIFEST)
            output = ctx.storage.place_project(staging, namespace, name, uid, manifest.content_hash)
    except RenderCancelled as exc:
        logger.info(exc.message)
        return metrics.Outcome.CANCELLED
    except SourceUnavailable as exc:
        if moving:
            _keep(write, body, status, exc.message)
        else:
            _wait(write, body, "SourceUnavailable", exc.message)
        raise kopf.TemporaryError(exc.message, delay=retry_delay(retry)) from None
    except GenerationError as exc:
        killed = isinstance(exc, SandboxKilled)
        metrics.render_failed(
            metrics.RenderFailure.SANDBOX_KILLED if killed else metrics.RenderFailure.TEMPLATE
        )
        if moving:
            _keep(write, body, status, exc.message)
            return metrics.Outcome.CURRENT
        write.fail("GenerationFailed", exc.message)
        return metrics.Outcome.FAILED
    except (ApiUnavailable, Forbidden) as exc:
        _wait(write, body, "ApiUnavailable", str(exc))
        raise kopf.TemporaryError(str(exc), delay=retry_delay(retry)) from None

    for warning in result.warnings:
        kopf.warn(body, reason="Warning", message=warning)
    cap = ctx.settings.status_file_cap
    records = [f.status_record() for f in manifest.files[:cap]]
    message = f"{manifest.total_files} files, {manifest.total_size} bytes"
    skipped = [w for w in result.warnings if "_tasks were skipped" in w or "hooks were skipped" in w]
    if skipped:
        message += "; " + "; ".join(skipped)
    resolved = [r.wire() for r in result.templates]
    # This render resolved every ref against the repository as it is now: an older check's
    # complaint no longer describes the project.
    write.status["conditions"] = without_condition(write.status.get("conditions"), TEMPLATE_CHECKED)
    write.last(
        GeneratedProjectPhase.COMPLETED,
        State.READY,
        "Completed",
        message,
        outputDirectory=str(output),
        totalFiles=manifest.total_files,
        totalSize=manifest.total_size,
        contentHash=manifest.content_hash,
        files=records,
        filesTruncated=manifest.total_files > len(records),
        completedAt=now(),
        templates=resolved or None,
        template=resolved[0] if resolved else None,
        engines=[e.wire() for e in result.engines] or None,
    )
    handled.finish(uid, generation, str(output / TREE))
    for moved in moved_events(status.get("templates") or [], result.templates):
        kopf.info(body, reason="TemplateMoved", message=moved)
    kopf.info(body, reason="Completed", message=f"generated {message} into {output}")
    metrics.rendered(manifest.total_size)
    return metrics.Outcome.COMPLETED


def template_checked(
    ctx: Context, body: kopf.Body, *, retry: int, logger: kopf.Logger, patch: kopf.Patch | None = None
) -> metrics.Outcome:
    """The update check's outcome changed (CHECK_ANNOTATION): render again when a followed ref
    moved; report a failed check in the TemplateChecked condition and leave the project as it is."""
    meta = body["metadata"]
    status = dict(body.get("status") or {})
    generation = int(meta.get("generation") or 1)
    if (
        status.get("phase") != GeneratedProjectPhase.COMPLETED
        or status.get("observedGeneration") != generation
    ):
        return metrics.Outcome.CURRENT  # a render under way (or failed) records its own resolution
    outcome = str((meta.get("annotations") or {}).get(CHECK_ANNOTATION))
    check = f"{meta['uid']}/check"
    if handled.finished(check, generation, outcome):
        return metrics.Outcome.CURRENT  # a late event of our own writes: this outcome is handled
    moves, problems = read_annotation((meta.get("annotations") or {}).get(CHECK_ANNOTATION))
    verdict = check_verdict(status, moves, problems)
    if verdict.condition is not None:
        ok, reason, message = verdict.condition
        conds = set_condition(
            status.get("conditions"),
            TEMPLATE_CHECKED,
            ConditionStatus.TRUE if ok else ConditionStatus.FALSE,
            generation=generation,
            reason=reason,
            message=message,
        )
        Kube(meta["namespace"]).patch_status(PLURAL, meta["name"], {"conditions": conds})
        if not ok:
            kopf.warn(body, reason="TemplateCheckFailed", message=message)
    if not verdict.render:
        handled.finish(check, generation, outcome)
        return metrics.Outcome.CURRENT
    logger.info("a followed template moved; rendering again")
    rendered = reconcile(ctx, body, retry=retry, logger=logger, moving=True, patch=patch)
    if rendered in (metrics.Outcome.COMPLETED, metrics.Outcome.CURRENT):
        handled.finish(check, generation, outcome)
    return rendered


def _keep(write: StatusWriter, body: kopf.Body, before: dict[str, Any], problem: str) -> None:
    """A render after a template moved failed: Completed again, on what the project had, with the
    reason in TemplateChecked and a Warning Event (the tree was never replaced)."""
    message = (
        f"the template moved but the new version did not render; the project keeps what it has: {problem}"
    )
    write.status["conditions"] = set_condition(
        write.status.get("conditions"),
        TEMPLATE_CHECKED,
        ConditionStatus.FALSE,
        generation=write.generation,
        reason="RenderFailed",
        message=message,
    )
    write(GeneratedProjectPhase.COMPLETED, State.READY, "Completed", _ready_message(before) or "Completed")
    kopf.warn(body, reason="TemplateRenderFailed", message=message)


def _wait(write: StatusWriter, body: kopf.Body, reason: str, message: str) -> None:
    """Phase Pending, and one Event per distinct reason to wait (not one per retry)."""
    before = write.status.get("phase"), _ready_message(write.status)
    write(GeneratedProjectPhase.PENDING, State.WAITING, reason, message)
    if before != (GeneratedProjectPhase.PENDING, _ready_message(write.status)):
        kopf.info(body, reason="Waiting", message=message)


def _ready_message(status: dict[str, Any]) -> str | None:
    return next((c.get("message") for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)


def delete(ctx: Context, body: kopf.Body) -> None:
    meta = body["metadata"]
    handled.forget(meta["uid"])
    handled.forget(f"{meta['uid']}/check")
    ctx.storage.remove_project(meta["namespace"], meta["name"], meta["uid"])
