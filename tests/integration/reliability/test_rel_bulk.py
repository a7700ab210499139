"""Inputs that are hostile by size: a zip-bomb-like file of zeros, and 100,000 tiny files.

- A template loop renders one file of zeros (256 MiB by default, 1 GiB with
  `PROJECTGEN_RELIABILITY_FULL=1`), exported as zip and tar.gz. Archives are streamed: the
  operator's peak resident memory while exporting stays under 300 MB: the exports run in a fresh
  operator process on the same data directory, so its VmHWM covers start-up and the exports only
  (no reset of the peak that a kernel or container may refuse). The render itself holds the file in memory (copier renders to a string);
  its peak is recorded, not bounded.
- 100,000 files from five ConfigMaps of 20,000 keys each (a ConfigMap holds at most 1 MiB):
  Completed, the status capped at 1,000 records, manifest.json complete, the tree equal to it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import kubernetes.client
from relsupport import (
    FULL,
    Stats,
    archive_problems,
    load_manifest,
    peak_rss_kib,
    tree_problems,
)
from support import EXPORTS, PROJECTS, create, project_body, wait_phase

BOMB_MIB = 1024 if FULL else 256
EXPORT_RSS_LIMIT_KIB = 300_000_000 // 1024  # 300 MB
ZEROS = "{% set chunk = '\\x00' * 1048576 %}{% for i in range(mib) %}{{ chunk }}{% endfor %}"


def _configmap(api: kubernetes.client.ApiClient, ns: str, name: str, data: dict[str, str]) -> None:
    body = kubernetes.client.V1ConfigMap(metadata=kubernetes.client.V1ObjectMeta(name=name), data=data)
    kubernetes.client.CoreV1Api(api).create_namespaced_config_map(ns, body)


def _export(name: str, project: str, export_type: str) -> dict[str, Any]:
    spec = {"generatedProjectRef": {"name": project}, "exportType": export_type, "compressionLevel": 6}
    return {"kind": "RepositoryExport", "metadata": {"name": name}, "spec": spec}


def test_zip_bomb_is_exported_within_bounded_memory(
    api_client: kubernetes.client.ApiClient, solo_namespace: str, operators: Any, stats: Stats, tmp_path: Path
) -> None:
    ns = solo_namespace
    op = operators.new((ns,), tmp_path / "data", name="bomb").start()
    assert op.proc is not None
    pid = op.proc.pid
    _configmap(api_client, ns, "bomb", {"copier": "mib:\n  type: int\n", "zeros": ZEROS})
    items = [{"key": "copier", "path": "copier.yml"}, {"key": "zeros", "path": "zeros.bin.jinja"}]
    source = {"template": {"configMap": {"name": "bomb", "items": items}, "data": {"mib": BOMB_MIB}}}
    t0 = time.monotonic()
    create(api_client, PROJECTS, ns, project_body("bomb", [source]))
    project = wait_phase(api_client, PROJECTS, ns, "bomb", "Completed", "Failed", timeout=600)
    assert project["status"]["phase"] == "Completed", project["status"]
    generated_s = time.monotonic() - t0
    assert project["status"]["totalSize"] == BOMB_MIB << 20
    assert project["status"]["files"][0]["type"] == "binary"
    render_peak = peak_rss_kib(pid)
    op.stop()
    exporter = operators.new((ns,), tmp_path / "data", name="bomb-export").start()
    assert exporter.proc is not None
    pid = exporter.proc.pid
    t1 = time.monotonic()
    for export_type in ("zip", "tar.gz"):
        create(api_client, EXPORTS, ns, _export(f"bomb-{export_type.replace('.', '')}", "bomb", export_type))
    statuses = {
        t: wait_phase(
            api_client, EXPORTS, ns, f"bomb-{t.replace('.', '')}", "Completed", "Failed", timeout=600
        )["status"]
        for t in ("zip", "tar.gz")
    }
    exported_s = time.monotonic() - t1
    export_peak = peak_rss_kib(pid)
    stats.put("bulk", "bomb_mib", BOMB_MIB)
    stats.put("bulk", "bomb_render_peak_rss_mb", render_peak // 1024)
    stats.put("bulk", "bomb_export_peak_rss_mb", export_peak // 1024)
    stats.put("bulk", "bomb_archive_bytes", {t: s.get("archiveSize") for t, s in statuses.items()})
    stats.put("bulk", "bomb_seconds", {"render": round(generated_s), "export": round(exported_s)})
    for status in statuses.values():
        assert status["phase"] == "Completed", status
    files = load_manifest(project["status"]["outputDirectory"])["files"]
    for export_type, status in statuses.items():
        problems = archive_problems(status, files, "bomb")
        assert not problems, f"{export_type}: {problems}"
    assert export_peak < EXPORT_RSS_LIMIT_KIB, (
        f"exporting a {BOMB_MIB} MiB file peaked at {export_peak // 1024} MiB resident (limit 300 MB)"
    )


def test_hundred_thousand_tiny_files(
    api_client: kubernetes.client.ApiClient, solo_namespace: str, operators: Any, stats: Stats, tmp_path: Path
) -> None:
    ns = solo_namespace
    total, per_map = 100_000, 20_000
    operators.new((ns,), tmp_path / "data", name="many").start()
    sources = []
    for m in range(total // per_map):
        name = f"files-{m}"
        _configmap(
            api_client, ns, name, {f"f{i:06d}.txt": f"{i}\n" for i in range(m * per_map, (m + 1) * per_map)}
        )
        sources.append({"configMap": {"name": name}})
    t0 = time.monotonic()
    create(api_client, PROJECTS, ns, project_body("many", sources))
    obj = wait_phase(api_client, PROJECTS, ns, "many", "Completed", "Failed", timeout=600)
    elapsed = time.monotonic() - t0
    status = obj["status"]
    assert status["phase"] == "Completed", status.get("errorMessage")
    stats.put("bulk", "tiny_files", total)
    stats.put("bulk", "tiny_files_seconds", round(elapsed))
    assert status["totalFiles"] == total
    assert len(status["files"]) == 1000 and status["filesTruncated"] is True
    assert len(load_manifest(status["outputDirectory"])["files"]) == total
    assert not tree_problems(status)
