"""Reconcile one GeneratedProject: validate, render into staging, swap into place, report."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kopf
from pydantic import ValidationError

from projectgen.api.v1alpha1 import GeneratedProjectSpec
from projectgen.api.v1alpha1.generatedproject import PLURAL
from projectgen.generation.errors import GenerationError, SourceUnavailable
from projectgen.generation.manifest import Manifest
from projectgen.generation.render import TemplateOptions, render_project
from projectgen.generation.sandbox import Limits, RenderCancelled
from projectgen.generation.template import generation_clock
from projectgen.handlers.context import Context
from projectgen.handlers.kube import ApiUnavailable, Forbidden, Kube
from projectgen.handlers.status import State, now
from projectgen.handlers.writer import StatusWriter

CREATED_BY_ANNOTATION = "projectgen.io/created-by"


def validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        parts.append(f"spec.{where}: {err['msg']}" if where else err["msg"])
    return "invalid spec: " + "; ".join(parts)


def _retry_delay(retry: int) -> float:
    return float(min(5 * 2**retry, 120))


def is_current(body: kopf.Body | dict[str, Any]) -> bool:
    """True when status already describes the current spec and its tree is on disk."""
    status = body.get("status") or {}
    generation = body["metadata"].get("generation")
    if status.get("observedGeneration") != generation:
        return False
    if status.get("phase") == "Archived":
        return bool((body.get("spec") or {}).get("archived"))
    if status.get("phase") != "Completed" or not status.get("outputDirectory"):
        return False
    return (Path(status["outputDirectory"]) / "tree").is_dir()


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
    ctx: Context, body: kopf.Body, *, retry: int, logger: kopf.Logger, resuming: bool = False
) -> None:
    meta = body["metadata"]
    namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
    generation = int(meta.get("generation") or 1)
    status = dict(body.get("status") or {})
    kube = Kube(namespace)  # the only namespace this resource can make the operator read
    created_by = (meta.get("annotations") or {}).get(CREATED_BY_ANNOTATION)
    extra: dict[str, Any] = {"createdBy": created_by} if created_by and not status.get("createdBy") else {}

    if resuming and is_current(body):
        logger.debug("status is current; nothing to do")
        return

    write = StatusWriter(body, PLURAL, always=extra)

    try:
        spec = GeneratedProjectSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        message = validation_message(exc)
        write.fail("InvalidSpec", message)
        return

    if spec.archived:
        ctx.storage.remove_project(namespace, name, uid)
        write(
            "Archived",
            State.READY,
            "Archived",
            "files removed from the volume; set spec.archived to false to regenerate",
            outputDirectory=None,
            files=None,
            filesTruncated=None,
        )
        kopf.info(body, reason="Archived", message="project archived: files removed from the volume")
        return

    if status.get("phase") != "Generating" or status.get("observedGeneration") != generation:
        write("Generating", State.WORKING, "Generating", f"rendering {len(spec.sources)} source(s)")
        kopf.info(body, reason="Generating", message=f"generation {generation} started")

    try:
        with ctx.storage.staging("gen") as staging:
            tree = staging / "tree"
            tree.mkdir()
            templates = TemplateOptions(
                limits=Limits.from_settings(ctx.settings),
                clock=generation_clock(meta.get("creationTimestamp")),
                forbidden=(str(ctx.settings.data_dir),),
                should_stop=superseded(kube, name, uid, generation),
            )
            result = render_project(
                spec, tree, configmaps=kube.configmap, workdir=staging, templates=templates
            )
            manifest: Manifest = result.manifest
            manifest.dump(staging / "manifest.json")
            output = ctx.storage.publish_project(staging, namespace, name, uid, manifest.content_hash)
    except RenderCancelled as exc:
        logger.info(exc.message)
        return
    except SourceUnavailable as exc:
        write("Pending", State.WAITING, "SourceUnavailable", exc.message)
        raise kopf.TemporaryError(exc.message, delay=_retry_delay(retry)) from None
    except GenerationError as exc:
        write.fail("GenerationFailed", exc.message)
        return
    except (ApiUnavailable, Forbidden) as exc:
        write("Pending", State.WAITING, "ApiUnavailable", str(exc))
        raise kopf.TemporaryError(str(exc), delay=_retry_delay(retry)) from None

    for warning in result.warnings:
        kopf.warn(body, reason="Warning", message=warning)
    cap = ctx.settings.status_file_cap
    records = [f.status_record() for f in manifest.files[:cap]]
    message = f"{manifest.total_files} files, {manifest.total_size} bytes"
    skipped = [w for w in result.warnings if "_tasks were skipped" in w]
    if skipped:
        message += "; " + "; ".join(skipped)
    write(
        "Completed",
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
    )
    kopf.info(body, reason="Completed", message=f"generated {message} into {output}")


def delete(ctx: Context, body: kopf.Body) -> None:
    meta = body["metadata"]
    ctx.storage.remove_project(meta["namespace"], meta["name"], meta["uid"])
