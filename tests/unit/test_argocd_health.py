"""The Argo CD health check (manifests/argocd/health.lua), run with a real Lua (lupa) the way Argo CD
runs it: `obj` is a global table, the script returns `{status, message}`, Lua 5.1."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

# Argo CD runs health checks with gopher-lua, a Lua 5.1. lupa (in the test extra) ships a Lua 5.1:
# a missing one is a broken install, an import error here, never a skip.
from lupa import lua51 as lupa

from projectgen_dev.ci import unavailable

ARGOCD = Path(__file__).resolve().parents[2] / "manifests" / "argocd"
SCRIPT = (ARGOCD / "health.lua").read_text()
KINDS = ("GeneratedProject", "RepositoryExport")


def health(obj: dict[str, Any]) -> dict[str, str]:
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(copy.deepcopy(obj), recursive=True)
    result = lua.execute(SCRIPT)
    return {"status": result["status"], "message": result["message"]}


def conditions(ready: str, reconciling: str, stalled: str, *, message: str, generation: int) -> list[Any]:
    return [
        {
            "type": t,
            "status": s,
            "reason": "R",
            "message": message if s == "True" or t == "Ready" else "",
            "observedGeneration": generation,
            "lastTransitionTime": "2025-01-01T00:00:00Z",
        }
        for t, s in (("Ready", ready), ("Reconciling", reconciling), ("Stalled", stalled))
    ]


def resource(
    kind: str,
    phase: str | None,
    conds: list[Any] | None,
    *,
    generation: int = 3,
    observed: int | None = 3,
    **status: Any,
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "projectgen.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": "billing", "namespace": "team-a", "generation": generation},
        "spec": {},
    }
    if phase is not None or conds is not None:
        obj["status"] = {
            **({"phase": phase} if phase else {}),
            **({"observedGeneration": observed} if observed is not None else {}),
            **({"conditions": conds} if conds is not None else {}),
            **status,
        }
    return obj


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


def test_completed_is_healthy(kind: str) -> None:
    obj = resource(kind, "Completed", conditions("True", "False", "False", message="3 files", generation=3))
    assert health(obj) == {"status": "Healthy", "message": "3 files"}


def test_archived_is_healthy() -> None:
    conds = conditions("True", "False", "False", message="files removed", generation=3)
    assert health(resource("GeneratedProject", "Archived", conds))["status"] == "Healthy"


def test_failed_is_degraded_with_the_message(kind: str) -> None:
    message = "sources[0].template: template uses copier's unsafe features (tasks); projectgen refuses them"
    obj = resource(
        kind,
        "Failed",
        conditions("False", "False", "True", message=message, generation=3),
        errorMessage=message,
    )
    assert health(obj) == {"status": "Degraded", "message": message}


def test_generating_is_progressing(kind: str) -> None:
    obj = resource(
        kind, "Generating", conditions("Unknown", "True", "False", message="rendering", generation=3)
    )
    assert health(obj) == {"status": "Progressing", "message": "rendering"}


def test_waiting_is_progressing(kind: str) -> None:
    message = "waiting for ConfigMap 'files' in namespace 'team-a'"
    obj = resource(kind, "Pending", conditions("False", "True", "False", message=message, generation=3))
    assert health(obj) == {"status": "Progressing", "message": message}


def test_no_status_is_progressing(kind: str) -> None:
    result = health(resource(kind, None, None))
    assert result["status"] == "Progressing"
    assert "generation 3" in result["message"]


def test_status_without_conditions_is_progressing(kind: str) -> None:
    assert health(resource(kind, "Pending", None))["status"] == "Progressing"
    assert health(resource(kind, "Pending", []))["status"] == "Progressing"


def test_no_observed_generation_is_progressing(kind: str) -> None:
    conds = conditions("True", "False", "False", message="done", generation=3)
    assert health(resource(kind, "Completed", conds, observed=None))["status"] == "Progressing"


@pytest.mark.parametrize(
    ("ready", "reconciling", "stalled"), [("True", "False", "False"), ("False", "False", "True")]
)
def test_stale_observed_generation_is_progressing(
    kind: str, ready: str, reconciling: str, stalled: str
) -> None:
    """A Completed (or Failed) status of generation 2 says nothing about the spec of generation 3."""
    conds = conditions(ready, reconciling, stalled, message="old news", generation=2)
    result = health(resource(kind, "Completed", conds, generation=3, observed=2))
    assert result["status"] == "Progressing"
    assert "generation 3" in result["message"]


def test_stale_conditions_are_ignored(kind: str) -> None:
    """status.observedGeneration moved on, but the conditions are still the old ones."""
    conds = conditions("True", "False", "False", message="old news", generation=2)
    assert health(resource(kind, "Completed", conds, generation=3, observed=3))["status"] == "Progressing"


def test_stalled_wins_over_ready(kind: str) -> None:
    conds = conditions("True", "False", "True", message="both", generation=3)
    assert health(resource(kind, "Failed", conds))["status"] == "Degraded"


def test_degraded_without_message_uses_error_message(kind: str) -> None:
    conds = conditions("False", "False", "True", message="", generation=3)
    obj = resource(kind, "Failed", conds, errorMessage="the template failed")
    assert health(obj) == {"status": "Degraded", "message": "the template failed"}


def test_configmap_patch_holds_the_script_for_both_kinds() -> None:
    patch = yaml.safe_load((ARGOCD / "argocd-cm-patch.yaml").read_text())
    assert patch["kind"] == "ConfigMap"
    assert patch["metadata"] == {"name": "argocd-cm", "namespace": "argocd"}
    assert patch["data"] == {f"resource.customizations.health.projectgen.io_{k}": SCRIPT for k in KINDS}


def test_kustomize_component_patches_argocd_cm(tmp_path: Path) -> None:
    if shutil.which("kubectl") is None:
        unavailable("kubectl (kustomize) is not on PATH")
    (tmp_path / "argocd-cm.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "argocd-cm", "namespace": "argocd"},
                "data": {"url": "https://argocd.example.com"},
            }
        )
    )
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump({"resources": ["argocd-cm.yaml"], "components": [os.path.relpath(ARGOCD, tmp_path)]})
    )
    out = subprocess.run(
        ["kubectl", "kustomize", str(tmp_path)], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    (cm,) = list(yaml.safe_load_all(out))
    assert cm["data"]["url"] == "https://argocd.example.com"
    for kind in KINDS:
        assert cm["data"][f"resource.customizations.health.projectgen.io_{kind}"] == SCRIPT
