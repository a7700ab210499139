"""The monitoring Component's ServiceMonitors and PrometheusRule, admitted by a real kube-apiserver
under the Prometheus Operator's own CRDs (their OpenAPI schemas: field names, types, patterns),
as `kubectl apply` of the Component would be in a cluster that runs the operator."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from support import ensure_namespace

from projectgen_dev import promtool
from projectgen_dev.ci import unavailable
from projectgen_dev.controlplane import ControlPlane

ROOT = Path(__file__).resolve().parents[2]
OBJECTS = (
    ROOT / "manifests" / "monitoring" / "servicemonitor.yaml",
    ROOT / "manifests" / "monitoring" / "rules" / "prometheusrule.yaml",
    ROOT / "manifests" / "overlays" / "sharded" / "monitoring" / "servicemonitors.yaml",
)


def test_service_monitors_and_rules_are_admitted_under_the_prometheus_operators_crds(
    control_plane: ControlPlane, api_client: client.ApiClient, kubectl: Callable[..., Any], tmp_path: Path
) -> None:
    try:
        crds = promtool.prometheus_operator_crds("servicemonitors", "prometheusrules")
    except promtool.PromtoolError as exc:
        unavailable(f"the Prometheus Operator's CRDs: {exc}")
    (tmp_path / "crds").mkdir()
    for crd in crds:
        shutil.copy(crd, tmp_path / "crds" / crd.name)
    control_plane.install_crds(tmp_path / "crds")
    ensure_namespace(api_client, "projectgen-system")

    args = [a for path in OBJECTS for a in ("-f", str(path))]
    out = kubectl("apply", "--dry-run=server", "--validate=strict", *args, check=False)
    assert out.returncode == 0, out.stderr
    assert sorted(out.stdout.splitlines()) == [
        "prometheusrule.monitoring.coreos.com/projectgen created (server dry run)",
        "servicemonitor.monitoring.coreos.com/projectgen created (server dry run)",
        "servicemonitor.monitoring.coreos.com/projectgen-shard-a created (server dry run)",
        "servicemonitor.monitoring.coreos.com/projectgen-shard-b created (server dry run)",
    ]

    # The check can fail: a scrape interval that is no duration, an unknown field.
    monitor = yaml.safe_load(OBJECTS[0].read_text())
    monitor["spec"]["endpoints"][0]["interval"] = "every minute"
    out = kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(monitor), check=False)
    assert out.returncode != 0 and "interval" in out.stderr, out.stderr
    monitor = yaml.safe_load(OBJECTS[0].read_text())
    monitor["spec"]["endpoints"][0]["honourLabels"] = True
    out = kubectl(
        "apply",
        "--dry-run=server",
        "--validate=strict",
        "-f",
        "-",
        input=yaml.safe_dump(monitor),
        check=False,
    )
    assert out.returncode != 0 and "honourLabels" in out.stderr, out.stderr
