"""The operator's Prometheus metrics, all defined here, served on their own port.

Handlers record them (`handlers/__init__.py` times each reconcile, the coordinators note renders,
bytes and exports); domain code never imports this module: `export.publish.publish` takes an
`on_retry` callback, which the export handler points at `publish_retried`.

The fleet, volume and certificate series (`FleetCollector`) are computed at each scrape from what the watches
last reported (`projectgen.fleet`) and one statvfs of the data directory: no API call, no walk.

Every metric lives in `REGISTRY`, not prometheus_client's global one, so tests and the CLI's
other commands see only projectgen's series, and importing this module twice registers nothing twice.
"""

from __future__ import annotations

import enum
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from threading import Thread
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from projectgen.fleet import Fleet

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

PUBLISH_FAILURES = Counter(
    "projectgen_publish_failures",
    "Publish attempts that failed after their own retries, by forge; retryable: kopf tries again later "
    "(true) or the export is Failed (false).",
    ["forge", "retryable"],
    registry=REGISTRY,
)


class RenderFailure(enum.StrEnum):
    """Why a render failed (the `reason` label)."""

    INVALID_SPEC = "invalid_spec"
    """The spec does not validate."""
    TEMPLATE = "template"
    """A source or template failed by itself (an error in the template, a missing file, a refused URL)."""
    SANDBOX_KILLED = "sandbox_killed"
    """The sandbox stopped the render: a wall-clock, CPU, memory or output limit, or a signal."""


RENDER_FAILURES = Counter(
    "projectgen_render_failures",
    "Renders that failed, by reason (a project whose followed template moved keeps its last render).",
    ["reason"],
    registry=REGISTRY,
)
TEMPLATE_LISTINGS = Counter(
    "projectgen_template_listings",
    "Remote listings of a followed template's refs (one per URL per interval, shared by its projects).",
    registry=REGISTRY,
)
TEMPLATE_LISTING_FAILURES = Counter(
    "projectgen_template_listing_failures",
    "Remote listings of a followed template's refs that failed (host down, refused, not a repository).",
    registry=REGISTRY,
)

FLEET = Fleet()


class FleetCollector(Collector):
    """The fleet's day-two series and the volume's, computed at each scrape."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.data_dir: Path | None = None
        self.certificate_expires: float | None = None
        """Absent until the HTTPS side has a certificate: a zero would read as expired."""
        self.clock = time.time

    def describe(self) -> Iterable[Metric]:
        return []  # computed at scrape time: the registry must not call collect() to describe it

    def collect(self) -> Iterable[Metric]:
        now = self.clock()
        templates = GaugeMetricFamily(
            "projectgen_template_projects",
            "GeneratedProjects per template URL (no credentials, no query) and version rendered "
            '(tag, else commit); past 100 pairs the rest are summed under template_url="other".',
            labels=["template_url", "version"],
        )
        for (url, version), count in self.fleet.templates():
            templates.add_metric([url, version], count)
        yield templates
        requests = GaugeMetricFamily(
            "projectgen_update_requests",
            "Update (pull / merge) requests of RepositoryExports by state: open, conflicted (open, "
            "with files a person must resolve), merged, closed.",
            labels=["state"],
        )
        for state, count in self.fleet.requests().items():
            requests.add_metric([state], count)
        yield requests
        for conflicted, name, what in (
            (False, "projectgen_update_request_oldest_open_age_seconds", "open (conflicted or not)"),
            (True, "projectgen_update_request_oldest_conflicted_age_seconds", "conflicted"),
        ):
            family = GaugeMetricFamily(
                name,
                f"Age of the update request {what} the longest, and its RepositoryExport; absent when none.",
                labels=["namespace", "name"],
            )
            oldest = self.fleet.oldest(conflicted=conflicted)
            if oldest is not None:
                family.add_metric([oldest.namespace, oldest.name], max(0.0, now - oldest.since))
            yield family
        largest = GaugeMetricFamily(
            "projectgen_project_size_bytes",
            "Bytes of files of the 10 largest GeneratedProjects (status.totalSize).",
            labels=["namespace", "name"],
        )
        for (namespace, name), size in self.fleet.largest():
            largest.add_metric([namespace, name], size)
        yield largest
        yield from self._volume()
        if self.certificate_expires is not None:
            yield GaugeMetricFamily(
                "projectgen_serving_certificate_expiration_timestamp_seconds",
                "When the HTTPS side's serving certificate (download API, webhook) expires, in Unix seconds.",
                value=self.certificate_expires,
            )

    def _volume(self) -> Iterator[Metric]:
        if self.data_dir is None:
            return
        try:
            st = os.statvfs(self.data_dir)
        except OSError:
            return
        used = GaugeMetricFamily(
            "projectgen_volume_used_bytes",
            "Bytes used on the file system of the data directory (PROJECTGEN_DATA_DIR).",
        )
        used.add_metric([], (st.f_blocks - st.f_bfree) * st.f_frsize)
        yield used
        free = GaugeMetricFamily(
            "projectgen_volume_free_bytes",
            "Bytes the operator may still write on the file system of the data directory.",
        )
        free.add_metric([], st.f_bavail * st.f_frsize)
        yield free


FLEET_COLLECTOR = FleetCollector(FLEET)
REGISTRY.register(FLEET_COLLECTOR)


for _kind in (KIND_PROJECT, KIND_EXPORT):  # every series from the start: rate() needs a zero to begin at
    RECONCILE_DURATION.labels(kind=_kind)
    for _outcome in Outcome:
        RECONCILES.labels(kind=_kind, outcome=_outcome.value)
for _reason in RenderFailure:
    RENDER_FAILURES.labels(reason=_reason.value)


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


def publish_failed(forge: str, *, retryable: bool) -> None:
    PUBLISH_FAILURES.labels(forge=forge, retryable=str(retryable).lower()).inc()


def render_failed(reason: RenderFailure) -> None:
    RENDER_FAILURES.labels(reason=reason.value).inc()


def template_listed(ok: bool) -> None:
    """The update checker's callback (`Checker.on_listing`)."""
    TEMPLATE_LISTINGS.inc()
    if not ok:
        TEMPLATE_LISTING_FAILURES.inc()


def serving_certificate(expires_at: float) -> None:
    FLEET_COLLECTOR.certificate_expires = expires_at


def watch_volume(data_dir: Path) -> None:
    """Report the volume of `data_dir` from now on."""
    FLEET_COLLECTOR.data_dir = data_dir


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
