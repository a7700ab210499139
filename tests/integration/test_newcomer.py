"""What a new user meets first: the README's examples, a resource that waits, a fix applied while it
waits, and an operator restarted in the middle of a spec change."""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from support import (
    PROJECTS,
    OperatorProcess,
    condition,
    create,
    custom,
    events,
    get,
    inline_source,
    project_body,
    wait_for,
    wait_phase,
)

GROUP, VERSION = "projectgen.io", "v1alpha1"
README = Path(__file__).resolve().parents[2] / "README.md"
PROGRESS = f"{GROUP}/project_changed"


def readme_yaml_documents() -> list[dict[str, Any]]:
    blocks = re.findall(r"^```yaml\n(.*?)^```", README.read_text(), flags=re.S | re.M)
    docs = [d for block in blocks for d in yaml.safe_load_all(block) if isinstance(d, dict) and "kind" in d]
    assert len(docs) >= 4, "the README lost its examples"
    return docs


@pytest.mark.parametrize(
    "doc", readme_yaml_documents(), ids=lambda d: f"{d['kind']}-{d.get('metadata', {}).get('name')}"
)
def test_readme_examples_are_valid_as_written(kubectl: Callable[..., Any], namespace: str, doc: Any) -> None:
    """Every YAML example of the README is accepted by the API server as it is printed."""
    result = kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc), check=False
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.usefixtures("operator")
def test_a_waiting_project_says_why_once_and_stays_pending(
    api_client: client.ApiClient, namespace: str, kubectl: Callable[..., Any]
) -> None:
    create(api_client, PROJECTS, namespace, project_body("late", [{"configMap": {"name": "later"}}]))
    wait_phase(api_client, PROJECTS, namespace, "late", "Pending", timeout=30)
    # Retries follow 5 s, then 10 s: watch the phase through the first two of them.
    phases = set()
    deadline = time.monotonic() + 90
    retries = 0
    while retries < 2 and time.monotonic() < deadline:
        obj = get(api_client, PROJECTS, namespace, "late") or {}
        phases.add((obj.get("status") or {}).get("phase"))
        retries = int(
            json.loads(obj["metadata"].get("annotations", {}).get(PROGRESS, "{}")).get("retries") or 0
        )
        time.sleep(0.1)
    assert retries >= 2, "the project was not retried twice within 90 s"
    assert phases == {"Pending"}
    reasons = [e.reason for e in events(api_client, namespace, "late")]
    assert reasons.count("Generating") == 1, reasons
    assert reasons.count("Waiting") == 1, reasons
    # `kubectl get -o wide` shows why in the MESSAGE column, from the Ready condition.
    wide = kubectl("get", "-n", namespace, "gp", "late", "-o", "wide").stdout.splitlines()
    header, row = wide[0], wide[1]
    assert header.rstrip().endswith("MESSAGE")
    assert "ConfigMap 'later' not found" in row[header.index("MESSAGE") :]


@pytest.mark.usefixtures("operator")
def test_a_fixed_spec_takes_effect_at_once_whatever_the_old_one_waited_for(
    api_client: client.ApiClient, namespace: str
) -> None:
    create(api_client, PROJECTS, namespace, project_body("fixme", [inline_source({"a.txt": "a\n"})]))
    wait_phase(api_client, PROJECTS, namespace, "fixme", "Completed", timeout=60)
    # A change that waits for a ConfigMap nobody will create (a typo): kopf retries the update.
    custom(api_client).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PROJECTS, "fixme", {"spec": {"sources": [{"configMap": {"name": "typo"}}]}}
    )

    def delayed_until(obj: dict[str, Any]) -> datetime | None:
        annotations = obj["metadata"].get("annotations") or {}
        records = [json.loads(v) for k, v in annotations.items() if k.startswith(PROGRESS)]  # create, update
        delays = [datetime.fromisoformat(r["delayed"]) for r in records if r.get("delayed")]
        return max(delays) if delays else None

    # Wait until kopf's next retry is at least 8 s away (the second retry waits 10 s).
    waiting = wait_for(
        api_client,
        PROJECTS,
        namespace,
        "fixme",
        lambda o: (d := delayed_until(o)) is not None and (d - datetime.now(UTC)).total_seconds() > 8,
        timeout=40,
        what="waiting 8 s or more for its next retry",
    )
    retry_at = delayed_until(waiting)
    assert retry_at is not None
    custom(api_client).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PROJECTS, "fixme", {"spec": {"sources": [inline_source({"b.txt": "b\n"})]}}
    )
    done = wait_phase(api_client, PROJECTS, namespace, "fixme", "Completed", "Failed", timeout=30)
    assert done["status"]["phase"] == "Completed", done["status"]
    completed_at = datetime.fromisoformat(done["status"]["completedAt"].replace("Z", "+00:00"))
    assert completed_at < retry_at, f"the fix waited for the old retry ({completed_at} >= {retry_at})"


BIG_TEMPLATE = (
    "{% for i in range(n) %}{% for j in range(1000) %}line {{ i }}.{{ j }}\n{% endfor %}{% endfor %}"
)


def test_a_restart_in_the_middle_of_a_spec_change_renders_it_once(
    api_client: client.ApiClient, solo_namespace: str, control_plane: Any, tmp_path: Path
) -> None:
    namespace = solo_namespace
    data, log = tmp_path / "data", tmp_path / "operator.log"
    client.CoreV1Api(api_client).create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="big"),
            data={"copier": "n:\n  type: int\n", "big": BIG_TEMPLATE},
        ),
    )
    items = [{"key": "copier", "path": "copier.yml"}, {"key": "big", "path": "big.txt.jinja"}]

    def sources(n: int) -> list[dict[str, Any]]:
        return [{"template": {"configMap": {"name": "big", "items": items}, "data": {"n": n}}}]

    first = OperatorProcess(control_plane.kubeconfig, data, log, namespaces=(namespace,)).start()
    try:
        create(api_client, PROJECTS, namespace, project_body("twice", sources(1)))
        wait_phase(api_client, PROJECTS, namespace, "twice", "Completed", timeout=60)
        custom(api_client).patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PROJECTS, "twice", {"spec": {"sources": sources(3000)}}
        )
        wait_phase(api_client, PROJECTS, namespace, "twice", "Generating", timeout=30)
        deadline = time.monotonic() + 30
        while "generation 2 (attempt 1)" not in first.logs():
            assert time.monotonic() < deadline, "the render of generation 2 never started"
            time.sleep(0.1)
        # Frozen, the operator is where the kill will find it: rendering generation 2, not done.
        assert first.proc is not None
        first.proc.send_signal(signal.SIGSTOP)
        obj = get(api_client, PROJECTS, namespace, "twice") or {}
        assert obj["status"]["phase"] == "Generating", "the kill should land mid-generation"
    finally:
        first.kill()
    offset = len(log.read_text())
    with OperatorProcess(control_plane.kubeconfig, data, log, namespaces=(namespace,)):
        status = wait_phase(api_client, PROJECTS, namespace, "twice", "Completed", timeout=180)["status"]
        assert status["totalSize"] == sum(len(f"line {i}.{j}\n") for i in range(3000) for j in range(1000))
        # A known point instead of a window of seconds: kopf keeps a record per handler while any
        # handler of this change is due or delayed, and removes it once all have succeeded. With no
        # record left, nothing more is queued for generation 2: a second render has run by now.
        obj = wait_for(
            api_client,
            PROJECTS,
            namespace,
            "twice",
            lambda o: (
                not [k for k in o["metadata"].get("annotations") or {} if k.startswith(f"{GROUP}/project_")]
            ),
            timeout=60,
            what="with no kopf handler pending",
        )
        assert obj["status"]["observedGeneration"] == 2 and obj["status"]["phase"] == "Completed", obj[
            "status"
        ]
        after = log.read_text()[offset:]
    assert after.count(f"rendering {namespace}/twice generation 2") == 1, after[-3000:]
    assert condition(obj, "Ready")["status"] == "True"
