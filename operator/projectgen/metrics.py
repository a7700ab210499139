"""The operator's Prometheus metrics, all defined here, served on their own port.

Handlers record them (`handlers/__init__.py` times each reconcile, the coordinators note renders,
bytes and exports); domain code never imports this module: `export.publish.publish` takes an
`on_retry` callback, which the export handler points at `publish_retried`.

Every metric lives in `REGISTRY`, not prometheus_client's global one, so tests and the CLI's
other commands see only projectgen's series, and importing this module twice registers nothing twice.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Iterator
from contextlib import contextmanager
from threading import Thread
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

KIND_PROJECT = "GeneratedProject"
KIND_EXPORT = "RepositoryExport"


class Outcome(enum.StrEnum):
    """How one reconcile ended (the `outcome` label)."""

    COMPLETED = "completed"
    """Rendered / exported; status Completed."""
    FAILED = "failed"
    """Status Failed: bad input or a permanent error; not retried until the spec changes."""
    PENDING = "pending"
    """Waiting (a source, the project, the API server) or a temporary error: kopf retries it."""
    ARCHIVED = "archived"
    """A project's spec.archived: its files were removed."""
    CANCELLED = "cancelled"
    """A render stopped because its resource was deleted or changed meanwhile."""
    CURRENT = "current"
    """Nothing to do: the status already describes the spec."""
    ERROR = "error"
    """An unexpected exception (a bug): kopf logs it and retries."""


# Seconds: a reconcile of an inline project takes milliseconds, a big template a few minutes.
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

REGISTRY = CollectorRegistry(auto_describe=True)

RECONCILES = Counter(
    "projectgen_reconciles",
    "Reconciles of projectgen resources, by kind and outcome.",
    ["kind", "outcome"],
    registry=REGISTRY,
)
RECONCILE_DURATION = Histogram(
    "projectgen_reconcile_duration_seconds",
    "Wall-clock time of one reconcile, by kind.",
    ["kind"],
    buckets=DURATION_BUCKETS,
    registry=REGISTRY,
)
RENDER_DURATION = Histogram(
    "projectgen_render_duration_seconds",
    "Wall-clock time of rendering one GeneratedProject (every source, into staging), whatever the result.",
    buckets=DURATION_BUCKETS,
    registry=REGISTRY,
)
EXPORT_DURATION = Histogram(
    "projectgen_export_duration_seconds",
    "Wall-clock time of writing one archive or publishing one repository, by export type.",
    ["type"],
    buckets=DURATION_BUCKETS,
    registry=REGISTRY,
)
RENDERS_IN_FLIGHT = Gauge(
    "projectgen_renders_in_flight",
    "GeneratedProject renders running now.",
    registry=REGISTRY,
)
RENDERED_BYTES = Counter(
    "projectgen_rendered_bytes",
    "Bytes of files in completed renders (the sum of status.totalSize).",
    registry=REGISTRY,
)
EXPORTED_BYTES = Counter(
    "projectgen_exported_bytes",
    "Bytes exported, by export type: archive sizes (status.archiveSize); for forges, the project's files pushed.",
    ["type"],
    registry=REGISTRY,
)
PUBLISH_RETRIES = Counter(
    "projectgen_publish_retries",
    "Temporary publish failures that were retried, in the same call or by a later reconcile, by forge.",
    ["forge"],
    registry=REGISTRY,
)


for _kind in (KIND_PROJECT, KIND_EXPORT):  # every series from the start: rate() needs a zero to begin at
    RECONCILE_DURATION.labels(kind=_kind)
    for _outcome in Outcome:
        RECONCILES.labels(kind=_kind, outcome=_outcome.value)


def record_reconcile(kind: str, outcome: Outcome, seconds: float) -> None:
    RECONCILES.labels(kind=kind, outcome=outcome.value).inc()
    RECONCILE_DURATION.labels(kind=kind).observe(seconds)


@contextmanager
def rendering() -> Iterator[None]:
    """Around one render: counts it in flight and times it, however it ends."""
    start = time.monotonic()
    RENDERS_IN_FLIGHT.inc()
    try:
        yield
    finally:
        RENDERS_IN_FLIGHT.dec()
        RENDER_DURATION.observe(time.monotonic() - start)


@contextmanager
def exporting(export_type: str) -> Iterator[None]:
    """Around writing one archive or publishing one repository: times it, however it ends."""
    start = time.monotonic()
    try:
        yield
    finally:
        EXPORT_DURATION.labels(type=export_type).observe(time.monotonic() - start)


def rendered(size: int) -> None:
    RENDERED_BYTES.inc(size)


def exported(export_type: str, size: int) -> None:
    EXPORTED_BYTES.labels(type=export_type).inc(size)


def publish_retried(forge: str) -> None:
    PUBLISH_RETRIES.labels(forge=forge).inc()


def serve(port: int, addr: str = "0.0.0.0") -> tuple[WSGIServer, Thread]:
    """Serve `/metrics` (any path, in fact: prometheus_client answers every GET) on a daemon thread.
    Raises OSError when the port is taken."""
    server, thread = start_http_server(port, addr=addr, registry=REGISTRY)
    return server, thread


_serving: dict[int, WSGIServer] = {}


def ensure_served(port: int) -> bool:
    """Serve on `port` unless this process already does; True when this call started it.
    `projectgen run` calls it before kopf starts (a port taken is a clear error there), the
    operator's startup handler again (for `kopf run -m projectgen.handlers`)."""
    if port in _serving:
        return False
    _serving[port], _thread = serve(port)
    return True


def stop_serving() -> None:
    while _serving:
        _port, server = _serving.popitem()
        server.shutdown()
        server.server_close()
