"""projectgen.metrics: what a Prometheus server scraping the operator's port reads, over loopback."""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from projectgen import metrics
from projectgen.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    port = free_port()
    server, thread = metrics.serve(port, addr="127.0.0.1")
    yield port
    server.shutdown()
    server.server_close()
    thread.join(5)


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics: (name, sorted labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_names_follow_prometheus_conventions(port: int) -> None:
    families = {(f.name, f.type) for f in metrics.REGISTRY.collect()}
    assert families == {
        ("projectgen_reconciles", "counter"),  # exposed as projectgen_reconciles_total
        ("projectgen_reconcile_duration_seconds", "histogram"),
        ("projectgen_render_duration_seconds", "histogram"),
        ("projectgen_export_duration_seconds", "histogram"),
        ("projectgen_renders_in_flight", "gauge"),
        ("projectgen_rendered_bytes", "counter"),
        ("projectgen_exported_bytes", "counter"),
        ("projectgen_publish_retries", "counter"),
        ("projectgen_publish_failures", "counter"),
        ("projectgen_render_failures", "counter"),
        ("projectgen_template_listings", "counter"),
        ("projectgen_template_listing_failures", "counter"),
        ("projectgen_serving_certificate_expiration_timestamp_seconds", "gauge"),
        # the fleet's, computed at each scrape (test_fleet_metrics.py)
        ("projectgen_template_projects", "gauge"),
        ("projectgen_update_requests", "gauge"),
        ("projectgen_update_request_oldest_open_age_seconds", "gauge"),
        ("projectgen_update_request_oldest_conflicted_age_seconds", "gauge"),
        ("projectgen_project_size_bytes", "gauge"),
    } | (
        {("projectgen_volume_used_bytes", "gauge"), ("projectgen_volume_free_bytes", "gauge")}
        if metrics.FLEET_COLLECTOR.data_dir
        else set()
    )
    samples = scrape(port)
    names = {name for name, _ in samples}
    assert all(n.startswith("projectgen_") for n in names), names  # our registry only: no process_/python_
    assert "projectgen_reconciles_total" in names and "projectgen_rendered_bytes_total" in names
    # Every kind and outcome is there from the start, at zero or more: rate() has a start.
    for kind in (metrics.KIND_PROJECT, metrics.KIND_EXPORT):
        for outcome in metrics.Outcome:
            assert ("projectgen_reconciles_total", (("kind", kind), ("outcome", outcome.value))) in samples


def test_a_reconcile_is_counted_by_kind_and_outcome_and_timed(port: int) -> None:
    before = scrape(port)
    metrics.record_reconcile(metrics.KIND_EXPORT, metrics.Outcome.FAILED, 0.3)
    metrics.record_reconcile(metrics.KIND_EXPORT, metrics.Outcome.FAILED, 0.02)
    metrics.record_reconcile(metrics.KIND_PROJECT, metrics.Outcome.COMPLETED, 4.0)
    after = scrape(port)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("projectgen_reconciles_total", kind="RepositoryExport", outcome="failed") == 2
    assert delta("projectgen_reconciles_total", kind="RepositoryExport", outcome="completed") == 0
    assert delta("projectgen_reconciles_total", kind="GeneratedProject", outcome="completed") == 1
    assert delta("projectgen_reconcile_duration_seconds_count", kind="RepositoryExport") == 2
    assert delta("projectgen_reconcile_duration_seconds_sum", kind="RepositoryExport") == pytest.approx(0.32)
    # Cumulative buckets: 0.02 is under 0.025, 0.3 is not; both are under 0.5.
    assert delta("projectgen_reconcile_duration_seconds_bucket", kind="RepositoryExport", le="0.025") == 1
    assert delta("projectgen_reconcile_duration_seconds_bucket", kind="RepositoryExport", le="0.5") == 2
    assert delta("projectgen_reconcile_duration_seconds_bucket", kind="GeneratedProject", le="2.5") == 0
    assert delta("projectgen_reconcile_duration_seconds_bucket", kind="GeneratedProject", le="5.0") == 1


def test_renders_in_flight_go_back_down_however_the_render_ends(port: int) -> None:
    count = value(scrape(port), "projectgen_render_duration_seconds_count")
    with metrics.rendering(), metrics.rendering():
        assert value(scrape(port), "projectgen_renders_in_flight") == 2
    with pytest.raises(RuntimeError), metrics.rendering():
        assert value(scrape(port), "projectgen_renders_in_flight") == 1
        raise RuntimeError("the render failed")
    after = scrape(port)
    assert value(after, "projectgen_renders_in_flight") == 0
    assert value(after, "projectgen_render_duration_seconds_count") == count + 3


def test_bytes_and_retries_are_counted_by_type_and_forge(port: int) -> None:
    before = scrape(port)
    metrics.rendered(1200)
    metrics.rendered(34)
    metrics.exported("zip", 999)
    metrics.exported("tar.gz", 10)
    metrics.publish_retried("github")
    with pytest.raises(OSError), metrics.exporting("zip"):
        raise OSError("disk full")
    after = scrape(port)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("projectgen_rendered_bytes_total") == 1234
    assert delta("projectgen_exported_bytes_total", type="zip") == 999
    assert delta("projectgen_exported_bytes_total", type="tar.gz") == 10
    assert delta("projectgen_publish_retries_total", forge="github") == 1
    assert delta("projectgen_publish_retries_total", forge="gitlab") == 0
    assert delta("projectgen_export_duration_seconds_count", type="zip") == 1


def test_a_port_in_use_is_an_error_not_a_silent_lack_of_metrics(port: int) -> None:
    with pytest.raises(OSError):
        metrics.serve(port, addr="127.0.0.1")


def test_the_port_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROJECTGEN_METRICS_PORT", raising=False)
    assert Settings.from_env().metrics_port == 9090
    monkeypatch.setenv("PROJECTGEN_METRICS_PORT", "0")
    assert Settings.from_env().metrics_port == 0
    monkeypatch.setenv("PROJECTGEN_METRICS_PORT", "70000")
    with pytest.raises(ValueError, match="PROJECTGEN_METRICS_PORT must be a port"):
        Settings.from_env()


def test_served_once_per_port_and_stopped() -> None:
    """`projectgen run` binds the port, then kopf's startup handler asks again: one server."""
    port = free_port()
    try:
        assert metrics.ensure_served(port) is True
        assert metrics.ensure_served(port) is False
        assert "projectgen_reconciles_total" in {name for name, _ in scrape(port)}
    finally:
        metrics.stop_serving()
    with socket.socket() as s:  # the port is free again (our scrape's connection may be in TIME_WAIT)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port))
        s.listen()
