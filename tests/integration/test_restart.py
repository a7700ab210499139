"""A restart over settled resources costs nothing: no render, no archive, no write.

Behaviour, not timing: the settled objects keep their resourceVersion (nothing wrote to them),
their trees and archives keep their inode (nothing rendered or archived again), no Event is posted
for them, and a GeneratedProject applied at the restart still completes.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from kubernetes import client
from support import (
    EXPORTS,
    GROUP,
    PROJECTS,
    VERSION,
    OperatorProcess,
    create,
    inline_source,
    project_body,
    wait_phase,
)

PAIRS = 15  # 30 resources: 5 Completed, 5 Failed and 5 Archived projects, a zip export each


def _versions(api: client.ApiClient, namespace: str) -> dict[tuple[str, str], str]:
    out = {}
    for plural in (PROJECTS, EXPORTS):
        listed: Any = client.CustomObjectsApi(api).list_namespaced_custom_object(
            GROUP, VERSION, namespace, plural
        )
        for item in listed["items"]:
            out[(plural, item["metadata"]["name"])] = item["metadata"]["resourceVersion"]
    return out


def _stable_versions(
    api: client.ApiClient, namespace: str, timeout: float = 60
) -> dict[tuple[str, str], str]:
    """The resourceVersions once they stop changing for 3 s (kopf's last patches have landed)."""
    deadline = time.monotonic() + timeout
    last = _versions(api, namespace)
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = _versions(api, namespace)
        if now != last:
            last, quiet_since = now, time.monotonic()
        elif time.monotonic() - quiet_since >= 3:
            return now
    raise AssertionError("the settled objects kept changing")


def _files(data: Path, namespace: str) -> dict[str, tuple[int, int]]:
    """Every tree and archive of the namespace in the volume: path -> (inode, mtime_ns)."""
    out = {}
    for root in (data / "projects" / namespace, data / "exports" / namespace):
        for path in root.rglob("*"):
            if path.is_file():
                st = path.stat()
                out[str(path)] = (st.st_ino, st.st_mtime_ns)
    return out


def _event_names(api: client.ApiClient, namespace: str) -> set[str]:
    return {e.metadata.name for e in client.CoreV1Api(api).list_namespaced_event(namespace).items}


def test_restart_over_settled_resources_writes_nothing(
    api_client: client.ApiClient, solo_namespace: str, control_plane: Any, tmp_path: Path
) -> None:
    namespace = solo_namespace
    data, log = tmp_path / "data", tmp_path / "operator.log"
    client.CoreV1Api(api_client).create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="cm"), data={"a": "x"})
    )
    expected = {}
    with OperatorProcess(control_plane.kubeconfig, data, log, namespaces=(namespace,)):
        for i in range(PAIRS):
            name, kind = f"p{i:02d}", ("Completed", "Failed", "Archived")[i % 3]
            if kind == "Failed":
                source = {"configMap": {"name": "cm", "items": [{"key": "missing", "path": "x"}]}}
            else:
                source = inline_source({"README.md": f"{name}\n"})
            extra = {"archived": True} if kind == "Archived" else {}
            create(api_client, PROJECTS, namespace, project_body(name, [source], **extra))
            export = {"generatedProjectRef": {"name": name}, "exportType": "zip"}
            create(
                api_client,
                EXPORTS,
                namespace,
                {"kind": "RepositoryExport", "metadata": {"name": f"{name}-zip"}, "spec": export},
            )
            expected[name] = kind
        for name, kind in expected.items():
            wait_phase(api_client, PROJECTS, namespace, name, kind)
            wait_phase(
                api_client,
                EXPORTS,
                namespace,
                f"{name}-zip",
                "Completed" if kind == "Completed" else "Failed",
            )
        versions = _stable_versions(api_client, namespace)
    files = _files(data, namespace)
    assert len(files) >= 2 * (PAIRS // 3), "trees and archives of the Completed projects"
    events = _event_names(api_client, namespace)
    start = log.stat().st_size

    with OperatorProcess(control_plane.kubeconfig, data, log, namespaces=(namespace,)) as restarted:
        create(api_client, PROJECTS, namespace, project_body("fresh", [inline_source({"a": "b"})]))
        wait_phase(api_client, PROJECTS, namespace, "fresh", "Completed", timeout=60)
        # Every settled object went through its resume handler: kopf logs each one.
        deadline = time.monotonic() + 60
        resumed: set[str] = set()
        while time.monotonic() < deadline and len(resumed) < 2 * PAIRS:
            text = log.read_text(errors="replace")[start:]
            resumed = set(re.findall(rf"\[{namespace}/([\w-]+)\] Resuming is processed", text))
            time.sleep(0.2)
        assert len(resumed) == 2 * PAIRS, f"resumed only {sorted(resumed)}:\n{restarted.logs()[-3000:]}"
        after = _versions(api_client, namespace)
    changed = {k for k, v in versions.items() if after.get(k) != v}
    assert changed == set(), f"written to on restart: {sorted(changed)}"
    again = {k: v for k, v in _files(data, namespace).items() if f"/{namespace}/fresh/" not in k}
    assert again == files, "a tree or an archive was written again"
    new_events = _event_names(api_client, namespace) - events
    about = {
        e.involved_object.name
        for e in client.CoreV1Api(api_client).list_namespaced_event(namespace).items
        if e.metadata.name in new_events
    }
    assert about <= {"fresh"}, f"Events posted on restart about {sorted(about - {'fresh'})}"
