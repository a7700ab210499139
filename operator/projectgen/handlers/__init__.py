"""Every kopf decorator of the operator, in one place. Each handler is a line or two that calls
a coordinator in `handlers/`; domain code lives in `generation/`, `export/` and `storage.py`.

Run with `projectgen run` (or `kopf run -m projectgen.handlers`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import kopf

from projectgen import kubeversion, metrics
from projectgen.api.v1alpha1 import GROUP, VERSION
from projectgen.api.v1alpha1.generatedproject import PLURAL as PROJECTS
from projectgen.api.v1alpha1.generatedproject import PROJECT_LABEL
from projectgen.api.v1alpha1.repositoryexport import PLURAL as EXPORTS
from projectgen.generation import sandbox
from projectgen.generation.checker import Checker
from projectgen.generation.follow import CHECK_ANNOTATION
from projectgen.handlers import generatedproject, projectwait, repositoryexport, templatecheck
from projectgen.handlers.context import Context
from projectgen.handlers.diffbase import CompactDiffBaseStorage
from projectgen.handlers.exportdecision import PROJECT_STATE_ANNOTATION, project_signature, project_view, wake
from projectgen.handlers.finalizer import FINALIZER, finalize, finalized
from projectgen.handlers.kube import Kube, server_version
from projectgen.handlers.progress import GenerationalProgressStorage, annotations_token
from projectgen.handlers.settled import (
    export_settled,
    project_settled,
    reflected_project_state,
    reflects,
)
from projectgen.settings import Settings


def label_filter(selector: str) -> dict[str, Any] | None:
    """A kopf label filter from a simple selector: `k=v`, `k` (present), `!k` (absent), comma-separated."""
    if not selector.strip():
        return None
    labels: dict[str, Any] = {}
    for term in (t.strip() for t in selector.split(",") if t.strip()):
        if term.startswith("!"):
            labels[term[1:]] = kopf.ABSENT
        elif "=" in term:
            key, _, value = term.partition("=")
            labels[key.rstrip("=").strip()] = value.strip()
        else:
            labels[term] = kopf.PRESENT
    return labels


_settings = Settings.from_env()
PROJECT_WAIT = 300.0
"""How long a new export waits in memory for its project to finish a render, before it says
Pending and waits for the wake-up annotation instead (a status write and two patches more). A
burst of creations queues renders behind the workers for minutes (41 s p50 at 500 pairs); the
waiting export holds no thread, and kstatus reads it as InProgress meanwhile (its status has
observedGeneration 0, the CRD's default)."""
LABELS = label_filter(_settings.label_selector)


def is_export(body: Any) -> bool:
    return bool(body.get("kind") == "RepositoryExport")


def is_project(body: Any) -> bool:
    return bool(body.get("kind") == "GeneratedProject")


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: Any, logger: kopf.Logger, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    # Not kopf's own: a new spec (or a woken export) must not wait for the old one's retry delay.
    settings.persistence.progress_storage = GenerationalProgressStorage(
        prefix=GROUP,
        tokens=[
            (is_export, annotations_token(PROJECT_STATE_ANNOTATION)),
            (is_project, annotations_token(CHECK_ANNOTATION)),
        ],
    )
    # Not kopf's own: a spec over the API server's 256 KiB of annotations must not wedge the object.
    settings.persistence.diffbase_storage = CompactDiffBaseStorage(
        prefix=GROUP,
        key="last-handled-configuration",
        progress=settings.persistence.progress_storage,
        keep=(PROJECT_STATE_ANNOTATION, CHECK_ANNOTATION),
    )
    settings.peering.standalone = True
    settings.execution.max_workers = _settings.workers
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    # Our own status writes reach the watch before kopf's patch of the diff base: under load those
    # events can lag more than kopf's 5 s, and a creation would be handled (rendered) again.
    settings.persistence.consistency_timeout = 30
    ctx = Context.from_settings(_settings)
    removed = ctx.storage.clean_staging()
    if removed:
        logger.info("removed %d staging leftovers of an earlier run", removed)
    memo.ctx = ctx
    memo.settings = settings  # its executor runs the async handlers' sync work
    memo.checker = Checker(
        on_listing=metrics.template_listed
    )  # one for every project: the listings are shared
    metrics.watch_volume(ctx.settings.data_dir)
    sandbox.start_server()  # the first render then costs a fork, not copier's imports


@kopf.on.startup()
def check_kubernetes_version(logger: kopf.Logger, **_: Any) -> None:
    """Refuse an API server older than the supported range, before any resource is touched: the
    log line (the pod's termination message) names the version. A newer one runs, with a warning."""
    version = server_version()  # an unreachable API server is retried (ApiUnavailable)
    try:
        warning = kubeversion.check(version)
    except kubeversion.UnsupportedKubernetes as exc:
        raise kopf.PermanentError(str(exc)) from None
    if warning:
        logger.warning(warning)
    else:
        logger.info("Kubernetes %s (supported: %s)", version.text, kubeversion.supported_range())


@kopf.on.startup(errors=kopf.ErrorsMode.PERMANENT)
def serve_metrics(logger: kopf.Logger, **_: Any) -> None:
    """/metrics on its own port (`projectgen run` has bound it already, this serves it under
    `kopf run`). A port already taken stops the operator, not retried: it must not run on without
    the metrics it was told to serve."""
    if _settings.metrics_port and metrics.ensure_served(_settings.metrics_port):
        logger.info("serving metrics on port %d", _settings.metrics_port)


@kopf.on.cleanup()
def stop_metrics(**_: Any) -> None:
    metrics.stop_serving()


def _ctx(memo: Any) -> Context:
    ctx: Context = memo.ctx
    return ctx


def _observed(kind: str, reconcile: Callable[[], metrics.Outcome]) -> None:
    """Run one reconcile, counting it by how it ended and timing it. A TemporaryError is kopf's
    retry: pending; any other exception is a bug kopf logs and retries: error."""
    start = time.monotonic()
    outcome = metrics.Outcome.ERROR
    try:
        outcome = reconcile()
    except kopf.TemporaryError:
        outcome = metrics.Outcome.PENDING
        raise
    finally:
        metrics.record_reconcile(kind, outcome, time.monotonic() - start)


# GeneratedProject ----------------------------------------------------------------------------


def changes_spec(diff: Any) -> bool:
    """True when kopf's diff touches the spec: then the update handler runs in the same cycle."""
    return any(tuple(item[1])[:1] == ("spec",) for item in diff or ())


def _label_project(body: kopf.Body, patch: kopf.Patch) -> None:
    """`projectgen.io/project=<spec.projectRef.name>` and the finalizer, in the patch kopf sends
    after the handler anyway (with its diff base): one metadata write, not three."""
    finalize(body, patch)
    project = ((body.get("spec") or {}).get("projectRef") or {}).get("name")
    if project and (body["metadata"].get("labels") or {}).get(PROJECT_LABEL) != project:
        patch.metadata.labels[PROJECT_LABEL] = project


@kopf.on.resume(GROUP, VERSION, PROJECTS, labels=LABELS)
def project_resumed(
    body: kopf.Body, patch: kopf.Patch, diff: kopf.Diff, retry: int, logger: kopf.Logger, memo: Any, **_: Any
) -> None:
    _label_project(body, patch)
    if changes_spec(diff) or project_settled(body):
        # A spec change interrupted by a restart: project_changed renders it once. A settled
        # project: nothing to do, not even a read.
        return
    _observed(
        metrics.KIND_PROJECT,
        lambda: generatedproject.reconcile(
            _ctx(memo), body, retry=retry, logger=logger, resuming=True, patch=patch
        ),
    )


@kopf.on.create(GROUP, VERSION, PROJECTS, labels=LABELS)
@kopf.on.update(GROUP, VERSION, PROJECTS, labels=LABELS, field="spec")
def project_changed(
    body: kopf.Body, patch: kopf.Patch, retry: int, logger: kopf.Logger, memo: Any, **_: Any
) -> None:
    _label_project(body, patch)
    _observed(
        metrics.KIND_PROJECT,
        lambda: generatedproject.reconcile(_ctx(memo), body, retry=retry, logger=logger, patch=patch),
    )


@kopf.on.delete(GROUP, VERSION, PROJECTS, labels=LABELS, when=finalized)
def project_deleted(body: kopf.Body, memo: Any, **_: Any) -> None:
    generatedproject.delete(_ctx(memo), body)


@kopf.on.field(GROUP, VERSION, PROJECTS, labels=LABELS, field=("metadata", "annotations", CHECK_ANNOTATION))
def project_checked(
    body: kopf.Body, patch: kopf.Patch, retry: int, logger: kopf.Logger, memo: Any, **_: Any
) -> None:
    """The update check found a new outcome: render the moved template, or report the failure."""
    _observed(
        metrics.KIND_PROJECT,
        lambda: generatedproject.template_checked(_ctx(memo), body, retry=retry, logger=logger, patch=patch),
    )


@kopf.daemon(GROUP, VERSION, PROJECTS, labels=LABELS, cancellation_timeout=5, when=finalized)
async def project_follows_template(
    body: kopf.Body, stopped: kopf.DaemonStopped, logger: kopf.Logger, memo: Any, **_: Any
) -> None:
    """Checks the templates a project follows, at its interval (see templatecheck)."""
    await templatecheck.follow(_ctx(memo), memo.checker, body, stopped, logger)


@kopf.index(GROUP, VERSION, EXPORTS, labels=LABELS)
def exports_by_project(
    body: kopf.Body,
    namespace: str | None,
    name: str,
    spec: kopf.Spec,
    meta: kopf.Meta,
    status: kopf.Status,
    **_: Any,
) -> Any:
    project = (spec.get("generatedProjectRef") or {}).get("name")
    seen = (meta.get("annotations") or {}).get(PROJECT_STATE_ANNOTATION)
    value = (name, seen, status.get("phase"), reflected_project_state(body))
    return {(namespace, project): value} if project else None


@kopf.index(GROUP, VERSION, PROJECTS, labels=LABELS)
def projects_by_name(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> Any:
    """Each project as the watch last saw it: an export reads its project here, not with a GET."""
    return {(namespace, name): project_view(body)}


def _lookup(index: Any, namespace: str) -> Callable[[str], dict[str, Any] | None]:
    def lookup(name: str) -> dict[str, Any] | None:
        return next(iter(index.get((namespace, name), [])), None) if index is not None else None

    return lookup


_woken: dict[tuple[str, str], tuple[str | None, str]] = {}
"""(namespace, export) -> (the state the export had recorded, the state sent to it). The export's
index entry catches up only with the export's own watch event: the project's next event (its
diff base, its label) must not send the same wake-up again."""


_waiting: set[tuple[str, str]] = set()
"""Exports whose handler waits in memory for their project (projectwait): no wake-up for them."""


def forget_wake(body: Any) -> None:
    meta = body.get("metadata") or {}
    _woken.pop((str(meta.get("namespace")), str(meta.get("name"))), None)


@kopf.on.event(GROUP, VERSION, PROJECTS, labels=LABELS)
async def project_event(
    event: kopf.RawEvent,
    namespace: str | None,
    name: str,
    memo: Any,
    exports_by_project: Any = None,
    **_: Any,
) -> None:
    """Wake the exports of a project when its phase or content changes: no polling. Note it for
    the fleet metrics. A project deleted before its first reconcile finished had no finalizer yet:
    its files go now."""
    if namespace is None:
        return
    body = dict(event["object"])
    metrics.FLEET.saw_project(namespace, name, None if event["type"] == "DELETED" else body)
    if event["type"] == "DELETED":
        await asyncio.to_thread(generatedproject.delete, _ctx(memo), kopf.Body(event["object"]))
    if exports_by_project is None:
        return
    signature = "deleted" if event["type"] == "DELETED" else project_signature(body)
    kube = Kube(namespace)
    for export, seen, phase, reflected in exports_by_project.get((namespace, name), []):
        state = wake(signature, seen, phase)
        key = (namespace, export)
        if state is None or reflects(reflected, state) or _woken.get(key) == (seen, state) or key in _waiting:
            continue  # a waiting export sees the new state when it stops waiting
        await asyncio.to_thread(kube.patch_annotations, EXPORTS, export, {PROJECT_STATE_ANNOTATION: state})
        _woken[(namespace, export)] = (seen, state)
    await projectwait.changed()


# RepositoryExport ----------------------------------------------------------------------------


@kopf.on.resume(GROUP, VERSION, EXPORTS, labels=LABELS)
def export_resumed(
    body: kopf.Body,
    patch: kopf.Patch,
    diff: kopf.Diff,
    retry: int,
    logger: kopf.Logger,
    memo: Any,
    projects_by_name: Any = None,
    **_: Any,
) -> None:
    if diff:  # a change interrupted by a restart: export_changed handles it in the same cycle
        return
    if export_settled(body):
        return  # a project that changed meanwhile wakes it (project_event), without a read here
    _observed(
        metrics.KIND_EXPORT,
        lambda: repositoryexport.reconcile(
            _ctx(memo),
            body,
            patch,
            retry=retry,
            logger=logger,
            resuming=True,
            lookup=_lookup(projects_by_name, body["metadata"]["namespace"]),
        ),
    )


@kopf.on.create(GROUP, VERSION, EXPORTS, labels=LABELS)
@kopf.on.update(GROUP, VERSION, EXPORTS, labels=LABELS)
async def export_changed(
    body: kopf.Body,
    patch: kopf.Patch,
    retry: int,
    logger: kopf.Logger,
    memo: Any,
    projects_by_name: Any = None,
    **_: Any,
) -> None:
    meta = body["metadata"]
    lookup = _lookup(projects_by_name, meta["namespace"])
    target = ((body.get("spec") or {}).get("generatedProjectRef") or {}).get("name")
    key = (meta["namespace"], meta["name"])
    if target and not (body.get("status") or {}).get("phase"):  # new: no phase yet
        _waiting.add(key)
        try:
            await projectwait.until_settled(lambda: lookup(target), PROJECT_WAIT)
        finally:
            _waiting.discard(key)
    if target:
        project = lookup(target)
        if project is not None:
            # This reconcile sees the project as it is now: that state needs no wake-up.
            seen = (meta.get("annotations") or {}).get(PROJECT_STATE_ANNOTATION)
            _woken[key] = (seen, project_signature(project) or "")
    await projectwait.in_worker(
        memo.settings,
        lambda: _observed(
            metrics.KIND_EXPORT,
            lambda: repositoryexport.reconcile(
                _ctx(memo), body, patch, retry=retry, logger=logger, lookup=lookup
            ),
        ),
    )


@kopf.timer(
    GROUP,
    VERSION,
    EXPORTS,
    labels=LABELS,
    interval=_settings.pull_request_poll_seconds or 3600.0,
    when=lambda body, **_: (
        bool(_settings.pull_request_poll_seconds) and finalized(body) and repositoryexport.polls_request(body)
    ),
)
def export_request_polled(body: kopf.Body, logger: kopf.Logger, memo: Any, **_: Any) -> None:
    repositoryexport.poll_request(_ctx(memo), body, logger=logger)


@kopf.on.delete(GROUP, VERSION, EXPORTS, labels=LABELS, when=finalized)
def export_deleted(body: kopf.Body, memo: Any, **_: Any) -> None:
    repositoryexport.delete(_ctx(memo), body)


@kopf.on.event(GROUP, VERSION, EXPORTS, labels=LABELS)
def export_event(event: kopf.RawEvent, namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    """Note the export's update request for the fleet metrics. An export deleted before its first
    reconcile finished had no finalizer yet: its archive (if that reconcile wrote one: kopf delivers
    this event after it) goes now."""
    if namespace is not None:
        metrics.FLEET.saw_export(namespace, name, None if event["type"] == "DELETED" else event["object"])
    if event["type"] == "DELETED":
        forget_wake(event["object"])
        repositoryexport.delete(_ctx(memo), kopf.Body(event["object"]))
