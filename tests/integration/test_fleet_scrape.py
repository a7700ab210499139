"""The fleet series of a running operator against the real control plane and git server: template
versions in use, the largest projects, the volume, the serving certificate; the scrape passes
`promtool check metrics` (Prometheus 3.16.0's own linter) and the Grafana dashboard's queries name
only metrics it holds."""

from __future__ import annotations

import datetime
import json
import os
import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families
from support import (
    PROJECTS,
    OperatorProcess,
    create,
    ensure_namespace,
    free_port,
    inline_source,
    project_body,
    wait_phase,
)
from test_template_follow import Template, completed, released, template_source

from projectgen_dev import promtool
from projectgen_dev.controlplane import ControlPlane
from projectgen_dev.gitserver import GitHTTPServer

ROOT = Path(__file__).resolve().parents[2]
SYSTEM = "fleet-metrics-system"
RUNAWAY = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"
DASHBOARD = ROOT / "manifests" / "monitoring" / "rules" / "dashboard.json"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def promtool_bin() -> Path:
    return promtool.for_tests()


@pytest.fixture(scope="module")
def git_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitHTTPServer]:
    with GitHTTPServer(tmp_path_factory.mktemp("git-fleet")) as server:
        yield server


def scrape_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def samples_of(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def series(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


def until(
    port: int, name: str, expected: dict[tuple[tuple[str, str], ...], float], timeout: float = 30
) -> str:
    """The fleet series follow watch events, a moment after the status patch: poll for them."""
    deadline = time.monotonic() + timeout
    while True:
        text = scrape_text(port)
        got = series(samples_of(text), name)
        if got == expected or time.monotonic() > deadline:
            assert got == expected, name
            return text
        time.sleep(0.2)


def dashboard_metrics() -> set[str]:
    names: set[str] = set()
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            names |= set(re.findall(r"\bprojectgen_[a-z_]+", target["expr"]))
    return names


def test_the_fleet_as_a_scrape_shows_it_and_promtool_accepts_the_scrape(
    control_plane: ControlPlane,
    api_client: client.ApiClient,
    solo_namespace: str,
    git_server: GitHTTPServer,
    promtool_bin: Path,
    tmp_path: Path,
) -> None:
    ns = solo_namespace
    tpl = released(git_server, f"fleet-{ns}", "v1.0.0", "v1.2.0")
    ensure_namespace(api_client, SYSTEM)
    port, serving = free_port(), free_port()
    data = tmp_path / "data"
    with OperatorProcess(
        control_plane.kubeconfig,
        data,
        tmp_path / "operator.log",
        namespaces=(ns,),
        env={
            "PROJECTGEN_METRICS_PORT": str(port),
            "PROJECTGEN_SERVING_PORT": str(serving),
            # a short one: the serving certificate's CN is projectgen-api.<namespace>.svc (64 at most)
            "PROJECTGEN_OPERATOR_NAMESPACE": SYSTEM,
            "PROJECTGEN_APISERVICE": "",
            "PROJECTGEN_WEBHOOK_CONFIGURATION": "",
            "PROJECTGEN_SANDBOX_WALL_SECONDS": "5",
        },
    ):
        create(api_client, PROJECTS, ns, project_body("one", [template_source(tpl.url, "v1.0.0")]))
        create(api_client, PROJECTS, ns, project_body("two", [template_source(tpl.url, "v1.0.0")]))
        create(api_client, PROJECTS, ns, project_body("newest", [template_source(tpl.url, ">=1")]))
        create(api_client, PROJECTS, ns, project_body("inline", [inline_source({"a.txt": "x" * 5000})]))
        runaway = Template(git_server, f"runaway-{ns}")
        runaway.release("v1", {"copier.yml": "name:\n  default: x\n", "a.txt.jinja": RUNAWAY})
        create(api_client, PROJECTS, ns, project_body("runaway", [template_source(runaway.url, "v1")]))
        before = datetime.datetime.now(datetime.UTC).timestamp()
        sizes = {
            name: completed(api_client, ns, name)["status"]["totalSize"]
            for name in ("one", "two", "newest", "inline")
        }
        killed = wait_phase(api_client, PROJECTS, ns, "runaway", "Completed", "Failed", timeout=90)["status"]
        assert "wall-clock limit of 5 s" in killed["errorMessage"], killed
        v1, v12 = (
            (("template_url", tpl.url), ("version", "v1.0.0")),
            (("template_url", tpl.url), ("version", "v1.2.0")),
        )
        until(port, "projectgen_template_projects", {v1: 2, v12: 1})
        until(
            port,
            "projectgen_render_failures_total",
            {
                (("reason", "invalid_spec"),): 0,
                (("reason", "template"),): 0,
                (("reason", "sandbox_killed"),): 1,
            },
        )
        until(
            port,
            "projectgen_project_size_bytes",
            {(("name", name), ("namespace", ns)): float(size) for name, size in sizes.items()},
        )
        deadline = time.monotonic() + 60  # the HTTPS side starts beside kopf, its CA Secret first
        while "projectgen_serving_certificate_expiration_timestamp_seconds" not in (
            text := scrape_text(port)
        ):
            assert time.monotonic() < deadline, "no serving certificate expiry"
            time.sleep(0.5)
        samples = samples_of(text)
        assert series(samples, "projectgen_update_requests") == {
            (("state", s),): 0 for s in ("open", "conflicted", "merged", "closed")
        }
        st = os.statvfs(data)
        free = samples[("projectgen_volume_free_bytes", ())]
        assert abs(free - st.f_bavail * st.f_frsize) < 256 * 1024 * 1024
        assert samples[("projectgen_volume_used_bytes", ())] > 0
        expires = samples[("projectgen_serving_certificate_expiration_timestamp_seconds", ())]
        assert 89 * 86400 < expires - before < 91 * 86400  # the operator's own certificate: 90 days

        check = promtool.run(promtool_bin, "check", "metrics", stdin=text)
        assert check.returncode == 0, check.stdout + check.stderr
        assert check.stdout.strip() == check.stderr.strip() == "", (check.stdout, check.stderr)

        # A labelled family with no child yet (no publish so far) has no sample: its names are
        # what Prometheus stores for its type once it has one.
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
        exposed = {name for name, _labels in samples} | {
            family.name + suffix
            for family in text_string_to_metric_families(text)
            for suffix in suffixes.get(family.type, ("",))
        }
        assert dashboard_metrics() <= exposed, dashboard_metrics() - exposed

        custom = client.CustomObjectsApi(api_client)
        custom.delete_namespaced_custom_object("projectgen.io", "v1alpha1", ns, PROJECTS, "two")
        until(port, "projectgen_template_projects", {v1: 1, v12: 1})


def test_promtool_check_metrics_refuses_a_badly_named_metric(promtool_bin: Path) -> None:
    """The check above can fail: a counter without _total is reported."""
    text = "# HELP projectgen_things Things.\n# TYPE projectgen_things counter\nprojectgen_things 1\n"
    check = promtool.run(promtool_bin, "check", "metrics", stdin=text)
    assert check.returncode != 0
    assert "_total" in check.stdout + check.stderr
