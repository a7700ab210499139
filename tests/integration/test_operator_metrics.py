"""The operator's Prometheus endpoint, scraped over loopback while it reconciles against a real
kube-apiserver: the counters and histograms a dashboard or an alert reads move as the resources do."""

from __future__ import annotations

import socket
import time
import urllib.request
from pathlib import Path

import pytest
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families
from support import (
    EXPORTS,
    PROJECTS,
    OperatorProcess,
    create,
    free_port,
    inline_source,
    project_body,
    wait_phase,
)
from test_export_archive import FILES, export_body
from test_generatedproject import configmap

from projectgen_dev.controlplane import ControlPlane

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def reconciles(samples: Samples, kind: str, outcome: str) -> float:
    return value(samples, "projectgen_reconciles_total", kind=kind, outcome=outcome)


def scrape_until(
    port: int, name: str, labels: dict[str, str], expected: float, timeout: float = 30
) -> Samples:
    """The counter is bumped when the handler returns, just after its status patch: poll for it."""
    deadline = time.monotonic() + timeout
    samples = scrape(port)
    while value(samples, name, **labels) < expected and time.monotonic() < deadline:
        time.sleep(0.2)
        samples = scrape(port)
    assert value(samples, name, **labels) == expected, (name, labels, value(samples, name, **labels))
    return samples


def test_metrics_follow_renders_exports_and_failures(
    control_plane: ControlPlane,
    api_client: client.ApiClient,
    solo_namespace: str,
    tmp_path: Path,
) -> None:
    ns = solo_namespace
    port = free_port()
    with OperatorProcess(
        control_plane.kubeconfig,
        tmp_path / "data",
        tmp_path / "operator.log",
        namespaces=(ns,),
        env={"PROJECTGEN_METRICS_PORT": str(port)},
    ) as op:
        assert op.metrics_port == port != op.port  # liveness on a port of its own
        before = scrape(port)
        assert reconciles(before, "GeneratedProject", "completed") == 0
        assert value(before, "projectgen_renders_in_flight") == 0

        create(api_client, PROJECTS, ns, project_body("demo", [inline_source(FILES)]))
        project = wait_phase(api_client, PROJECTS, ns, "demo", "Completed", timeout=60)
        after_render = scrape_until(
            port, "projectgen_reconciles_total", {"kind": "GeneratedProject", "outcome": "completed"}, 1
        )
        assert value(after_render, "projectgen_rendered_bytes_total") == project["status"]["totalSize"] > 0
        assert value(after_render, "projectgen_render_duration_seconds_count") == 1
        assert value(after_render, "projectgen_renders_in_flight") == 0
        assert (
            value(after_render, "projectgen_reconcile_duration_seconds_count", kind="GeneratedProject") >= 1
        )

        create(api_client, EXPORTS, ns, export_body("zip", "demo", "zip"))
        export = wait_phase(api_client, EXPORTS, ns, "zip", "Completed", timeout=60)
        after_export = scrape_until(
            port, "projectgen_reconciles_total", {"kind": "RepositoryExport", "outcome": "completed"}, 1
        )
        assert (
            value(after_export, "projectgen_exported_bytes_total", type="zip")
            == export["status"]["archiveSize"]
            == Path(export["status"]["archivePath"]).stat().st_size
        )
        assert value(after_export, "projectgen_export_duration_seconds_count", type="zip") == 1
        assert (
            value(after_export, "projectgen_reconcile_duration_seconds_count", kind="RepositoryExport") >= 1
        )
        assert value(
            after_export, "projectgen_reconcile_duration_seconds_bucket", kind="RepositoryExport", le="+Inf"
        ) == value(after_export, "projectgen_reconcile_duration_seconds_count", kind="RepositoryExport")
        # Nothing failed so far, and no bytes were rendered twice.
        assert reconciles(after_export, "GeneratedProject", "failed") == 0
        assert reconciles(after_export, "RepositoryExport", "failed") == 0
        assert value(after_export, "projectgen_rendered_bytes_total") == project["status"]["totalSize"]

        configmap(api_client, ns, "cm", {"a": "x"})
        source = {"configMap": {"name": "cm", "items": [{"key": "b", "path": "b"}]}}
        create(api_client, PROJECTS, ns, project_body("bad", [source]))
        bad = wait_phase(api_client, PROJECTS, ns, "bad", "Completed", "Failed", timeout=60)
        assert bad["status"]["phase"] == "Failed", bad["status"]
        after_failure = scrape_until(
            port, "projectgen_reconciles_total", {"kind": "GeneratedProject", "outcome": "failed"}, 1
        )
        assert reconciles(after_failure, "GeneratedProject", "completed") == 1
        assert value(after_failure, "projectgen_rendered_bytes_total") == project["status"]["totalSize"]
        assert (
            value(after_failure, "projectgen_render_duration_seconds_count") == 2
        )  # failed renders are timed too
        assert value(after_failure, "projectgen_renders_in_flight") == 0
        # a source that fails by itself, not the sandbox
        assert value(after_failure, "projectgen_render_failures_total", reason="template") == 1
        assert value(after_failure, "projectgen_render_failures_total", reason="sandbox_killed") == 0


def test_a_metrics_port_already_taken_stops_the_operator(
    control_plane: ControlPlane, solo_namespace: str, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))  # the operator binds every address, as in a pod
        taken.listen()
        port = taken.getsockname()[1]
        op = OperatorProcess(
            control_plane.kubeconfig,
            tmp_path / "data",
            tmp_path / "operator.log",
            namespaces=(solo_namespace,),
            env={"PROJECTGEN_METRICS_PORT": str(port)},
        )
        try:
            with pytest.raises(RuntimeError, match="operator exited with 1"):
                op.start(timeout=60)
        finally:
            op.stop()
    assert f"error: cannot serve metrics on port {port}: Address already in use" in op.logs()
    assert "Traceback" not in op.logs()
