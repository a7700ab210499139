"""Scale-out: several operators, each limited by a label selector (kopf's own filters), share no work."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubernetes import client
from support import EXPORTS, PROJECTS, OperatorProcess, create, get, inline_source, project_body, wait_phase


def test_two_operators_on_disjoint_selectors(
    api_client: client.ApiClient, solo_namespace: str, control_plane: Any, tmp_path: Path
) -> None:
    ns = solo_namespace
    shards = {
        shard: OperatorProcess(
            control_plane.kubeconfig,
            tmp_path / f"data-{shard}",
            tmp_path / f"operator-{shard}.log",
            namespaces=(ns,),
            selector=f"projectgen.io/shard={shard}",
        )
        for shard in ("a", "b")
    }
    for op in shards.values():
        op.start()
    try:
        for i in range(6):
            shard = "ab"[i % 2]
            body = project_body(f"p{i}", [inline_source({"i.txt": str(i)})])
            body["metadata"]["labels"] = {"projectgen.io/shard": shard}
            create(api_client, PROJECTS, ns, body)
            export = {
                "kind": "RepositoryExport",
                "metadata": {"name": f"p{i}-zip", "labels": {"projectgen.io/shard": shard}},
                "spec": {"generatedProjectRef": {"name": f"p{i}"}, "exportType": "zip"},
            }
            create(api_client, EXPORTS, ns, export)
        unlabelled = project_body("nobody", [inline_source({"x": "x"})])
        create(api_client, PROJECTS, ns, unlabelled)
        for i in range(6):
            shard = "ab"[i % 2]
            status = wait_phase(api_client, PROJECTS, ns, f"p{i}", "Completed", timeout=60)["status"]
            assert status["outputDirectory"].startswith(str(tmp_path / f"data-{shard}"))
            export_status = wait_phase(api_client, EXPORTS, ns, f"p{i}-zip", "Completed", timeout=60)[
                "status"
            ]
            assert export_status["archivePath"].startswith(str(tmp_path / f"data-{shard}"))
        # Neither shard touched the other's objects, nor the unlabelled one.
        for shard, op in shards.items():
            other = "b" if shard == "a" else "a"
            logs = op.logs()
            for i in range(6):
                if "ab"[i % 2] == other:
                    assert f"/p{i}]" not in logs and f"/p{i}-zip]" not in logs, f"shard {shard} handled p{i}"
        nobody = get(api_client, PROJECTS, ns, "nobody")
        assert nobody is not None and (nobody.get("status") or {}).get("phase") is None
        assert "projectgen.io/finalizer" not in (nobody["metadata"].get("finalizers") or [])
    finally:
        for op in shards.values():
            op.stop()
