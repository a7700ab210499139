"""manifests/monitoring/ without a cluster: the alert rules checked and unit-tested with promtool
of the Prometheus release they are written for, each alert's runbook in the README, the Grafana
dashboard's queries parsed by promtool, and the kustomize Component as the two installs use it.

promtool comes from projectgen_dev.promtool (built from the Go module proxy into the cache; `make
promtool`): missing, these tests fail in CI instead of skipping."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from projectgen_dev import promtool
from projectgen_dev.ci import unavailable

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "manifests" / "monitoring"
RULES = MONITORING / "rules" / "prometheusrule.yaml"
RULE_TESTS = MONITORING / "rules" / "tests"
DASHBOARD = MONITORING / "rules" / "dashboard.json"
README = ROOT / "README.md"

REQUIRED_ALERTS = {
    "ProjectgenOperatorDown",
    "ProjectgenReconcileErrorsRising",
    "ProjectgenRendersFailing",
    "ProjectgenRendersKilledBySandbox",
    "ProjectgenPublishRetriesExhausted",
    "ProjectgenUpdateRequestConflicted",
    "ProjectgenVolumeNearlyFull",
    "ProjectgenServingCertificateExpiresSoon",
}


@pytest.fixture(scope="module")
def promtool_bin() -> Path:
    return promtool.for_tests()


run = promtool.run


def rule_groups() -> dict[str, Any]:
    doc = yaml.safe_load(RULES.read_text())
    assert doc["kind"] == "PrometheusRule"
    return {"groups": doc["spec"]["groups"]}


def alerts() -> list[dict[str, Any]]:
    return [rule for group in rule_groups()["groups"] for rule in group["rules"] if "alert" in rule]


def write_rules(directory: Path) -> Path:
    path = directory / "rules.yaml"
    path.write_text(yaml.safe_dump(rule_groups(), sort_keys=False))
    return path


def test_promtool_is_the_release_the_rules_are_written_for(promtool_bin: Path) -> None:
    out = run(promtool_bin, "--version")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"promtool, version {promtool.PROMETHEUS_VERSION} "), out.stdout
    assert f"Prometheus {promtool.PROMETHEUS_VERSION}" in RULES.read_text()
    assert f"Prometheus {promtool.PROMETHEUS_VERSION}" in (MONITORING / "kustomization.yaml").read_text()


def test_promtool_check_rules_passes(promtool_bin: Path, tmp_path: Path) -> None:
    out = run(promtool_bin, "check", "rules", "--lint=all", "--lint-fatal", str(write_rules(tmp_path)))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in out.stdout, out.stdout


def test_promtool_check_rules_catches_a_broken_rule(promtool_bin: Path, tmp_path: Path) -> None:
    """The check above can fail: a rule with a query that does not parse is refused."""
    groups = rule_groups()
    groups["groups"][0]["rules"][0]["expr"] = "up{job=="
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(groups))
    out = run(promtool_bin, "check", "rules", str(path))
    assert out.returncode != 0
    assert "FAILED" in out.stdout + out.stderr


def test_every_required_alert_exists_and_says_what_to_check() -> None:
    found = {rule["alert"]: rule for rule in alerts()}
    assert set(found) >= REQUIRED_ALERTS, REQUIRED_ALERTS - set(found)
    anchors = readme_anchors()
    for name, rule in found.items():
        notes = rule["annotations"]
        assert notes.get("summary") and notes.get("description"), name
        assert len(notes["description"]) > 80, (name, "a description says what to check")
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), name
        # its own section of README.md, named after it
        assert notes["runbook_url"] == f"README.md#{name.lower()}", name
        assert name.lower() in anchors, (name, "has no runbook section in README.md")


def github_anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def readme_anchors() -> set[str]:
    return {
        github_anchor(line.lstrip("#"))
        for line in README.read_text().splitlines()
        if re.match(r"^#{2,6} ", line)
    }


def test_rule_unit_tests_pass_and_cover_every_alert_firing_and_not(
    promtool_bin: Path, tmp_path: Path
) -> None:
    tests = sorted(RULE_TESTS.glob("*.yaml"))
    assert tests
    write_rules(tmp_path)
    fires: set[str] = set()
    quiet: set[str] = set()
    for test in tests:
        shutil.copy(test, tmp_path / test.name)
        for case in yaml.safe_load(test.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    out = run(promtool_bin, "test", "rules", *(t.name for t in tests), cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("SUCCESS") == len(tests), out.stdout
    every = {rule["alert"] for rule in alerts()}
    assert every <= fires, ("never seen firing", every - fires)
    assert every <= quiet, ("never seen quiet", every - quiet)


def test_rule_unit_tests_fail_when_an_alert_changes(promtool_bin: Path, tmp_path: Path) -> None:
    """The unit tests can fail: a threshold moved (the volume at 5% instead of 10%) breaks them."""
    groups = rule_groups()
    for group in groups["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == "ProjectgenVolumeNearlyFull":
                rule["expr"] = rule["expr"].replace("< 0.10", "< 0.05")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(groups))
    shutil.copy(RULE_TESTS / "volume.yaml", tmp_path / "volume.yaml")
    out = run(promtool_bin, "test", "rules", "volume.yaml", cwd=tmp_path)
    assert out.returncode != 0
    assert "ProjectgenVolumeNearlyFull" in out.stdout + out.stderr


# The dashboard --------------------------------------------------------------------------------

GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
"""What Grafana puts in place of its built-in variables before it sends a query."""

PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
    "offset", "inf", "nan",
}  # fmt: skip


def panel_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            queries.append((panel["title"], expr))
    return queries


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers outside label matchers, strings,
    ranges and grouping clauses that are neither functions nor keywords."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        following = text[match.end() :].lstrip()
        if following.startswith("(") or match.group().lower() in PROMQL_WORDS:
            continue
        names.add(match.group())
    return names


def test_metric_names_reads_selectors_only() -> None:
    expr = 'histogram_quantile(0.95, sum by (le, type) (rate(projectgen_export_duration_seconds_bucket{a="b"}[5m])))'
    assert metric_names(expr) == {"projectgen_export_duration_seconds_bucket"}
    assert metric_names("min(a_b) - time() > bool 3 or on (x) c") == {"a_b", "c"}


def test_dashboard_shows_the_fleet_view() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    titles = [p["title"] for p in dashboard["panels"]]
    for wanted in (
        "Projects per template version",
        "Update requests by state",
        "Render duration",
        "Export duration by type",
        "Render failures by reason",
    ):
        assert wanted in titles
    names = set().union(*(metric_names(q) for _t, q in panel_queries()))
    assert {"projectgen_template_projects", "projectgen_update_requests"} <= names
    assert all(n.startswith("projectgen_") for n in names), names


def test_every_dashboard_query_parses_with_promtool(promtool_bin: Path, tmp_path: Path) -> None:
    """promtool has no offline parser command: each panel's query becomes a recording rule, which
    `promtool check rules` parses (as Prometheus would)."""
    queries = panel_queries()
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"dashboard:panel_{i}", "expr": q} for i, (_t, q) in enumerate(queries)],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    out = run(promtool_bin, "check", "rules", str(path))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(queries)} rules found" in out.stdout


# The Component ---------------------------------------------------------------------------------


def kustomize(tmp_path: Path, base: str, component: str) -> list[dict[str, Any]]:
    if shutil.which("kubectl") is None:
        unavailable("kubectl (kustomize) is not on PATH")
    # kustomize only takes relative paths to other kustomizations
    user = ROOT / f".monitoring-test-{tmp_path.name}"
    user.mkdir()
    try:
        (user / "kustomization.yaml").write_text(
            yaml.safe_dump({"resources": [f"../{base}"], "components": [f"../{component}"]})
        )
        out = subprocess.run(
            ["kubectl", "kustomize", str(user)], capture_output=True, text=True, check=False, timeout=60
        )
    finally:
        shutil.rmtree(user)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def selects(monitor: dict[str, Any], service: dict[str, Any]) -> bool:
    wanted = monitor["spec"]["selector"]["matchLabels"]
    labels = service["metadata"].get("labels") or {}
    ports = {p["name"] for p in service["spec"]["ports"]}
    same_ns = monitor["metadata"]["namespace"] == service["metadata"]["namespace"]
    endpoint_ports = {e["port"] for e in monitor["spec"]["endpoints"]}
    return same_ns and all(labels.get(k) == v for k, v in wanted.items()) and endpoint_ports <= ports


def test_component_adds_a_service_monitor_rules_and_dashboard(tmp_path: Path) -> None:
    docs = kustomize(tmp_path, "manifests", "manifests/monitoring")
    monitors = [d for d in docs if d["kind"] == "ServiceMonitor"]
    services = [d for d in docs if d["kind"] == "Service"]
    assert len(monitors) == 1
    assert [s["metadata"]["name"] for s in services if selects(monitors[0], s)] == ["projectgen-metrics"]
    [rule] = [d for d in docs if d["kind"] == "PrometheusRule"]
    assert rule["metadata"]["namespace"] == "projectgen-system"
    [dash] = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "projectgen-dashboard"]
    assert dash["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dash["data"]["dashboard.json"]) == json.loads(DASHBOARD.read_text())


def test_sharded_component_scrapes_each_shard_with_its_own_service_monitor(tmp_path: Path) -> None:
    docs = kustomize(tmp_path, "manifests/overlays/sharded", "manifests/overlays/sharded/monitoring")
    monitors = [d for d in docs if d["kind"] == "ServiceMonitor"]
    services = [d for d in docs if d["kind"] == "Service"]
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    assert len(monitors) == len(deployments) == 2
    scraped = {}
    for monitor in monitors:
        [service] = [s for s in services if selects(monitor, s)]
        scraped[monitor["metadata"]["name"]] = service["metadata"]["name"]
        # the Service's own selector reaches exactly one shard's pods
        pods = [
            d["metadata"]["name"]
            for d in deployments
            if all(
                d["spec"]["template"]["metadata"]["labels"].get(k) == v
                for k, v in service["spec"]["selector"].items()
            )
        ]
        assert len(pods) == 1, (monitor["metadata"]["name"], pods)
    assert scraped == {
        "projectgen-shard-a": "projectgen-metrics-shard-a",
        "projectgen-shard-b": "projectgen-metrics-shard-b",
    }
    assert len([d for d in docs if d["kind"] == "PrometheusRule"]) == 1
