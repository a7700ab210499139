"""Running the operator as a real subprocess, and waiting on resources, for integration tests."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from projectgen_dev.netns import NetworkNamespace

GROUP, VERSION = "projectgen.io", "v1alpha1"
LOOPBACK_POLICY = Path(__file__).with_name("loopback-policy.yaml")
"""The outbound policy every test operator gets unless its env says otherwise: loopback allowed."""
PROJECTS, EXPORTS = "generatedprojects", "repositoryexports"


# What a permission problem looks like in the operator's log: an HTTP 403 (not a number inside a
# hash, a uid or a resourceVersion), "forbidden", or kopf's warnings when it lacks a permission.
DENIED = re.compile(
    r"forbidden|(?<![\w.,-])403(?![\w.,-])|not enough permissions|failed to post an event", re.IGNORECASE
)
# The timestamp that opens a line of the plain log, as in [2026-12-02 01:45:40,403].
_PLAIN_TIMESTAMP = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[,.]\d+\]")


def permission_problems(log: str) -> list[str]:
    """The lines of an operator's log, plain or JSON, that show a missing permission.

    Each line is searched without its timestamp: the milliseconds 403 are not a refusal."""
    problems = []
    for line in log.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        if isinstance(entry, dict):
            entry.pop("timestamp", None)
            text = json.dumps(entry)
        else:
            text = _PLAIN_TIMESTAMP.sub("", line)
        if DENIED.search(text):
            problems.append(line)
    return problems


def ensure_namespace(api: client.ApiClient, name: str) -> None:
    """Create the namespace unless it is there."""
    try:
        client.CoreV1Api(api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    except ApiException as exc:
        if exc.status != 409:
            raise


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class OperatorProcess:
    """`projectgen run` in a subprocess, exactly as a user runs it (plain logs to a file)."""

    def __init__(
        self,
        kubeconfig: Path,
        data_dir: Path,
        log_path: Path,
        *,
        namespaces: tuple[str, ...] = (),
        selector: str | None = None,
        env: dict[str, str] | None = None,
        netns: NetworkNamespace | None = None,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.netns = netns
        """Run inside this network namespace; /healthz is then reached at its address."""
        self.data_dir = data_dir
        self.log_path = log_path
        self.namespaces = namespaces
        self.selector = selector
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.metrics_port = 0
        """Where /metrics is served: PROJECTGEN_METRICS_PORT of `env`, else a free port (never
        the default 9090: several operators run at once)."""

    def start(self, timeout: float = 60) -> OperatorProcess:
        self.port = free_port()
        self.metrics_port = int(self.env.get("PROJECTGEN_METRICS_PORT") or free_port())
        # The download API only where a test asks for it (a port of its own: operators run at once).
        self.serving_port = int(self.env.get("PROJECTGEN_SERVING_PORT") or 0)
        argv = [
            sys.executable,
            "-m",
            "projectgen",
            "run",
            "--log-format=plain",
            f"--liveness-port={self.port}",
            f"--metrics-port={self.metrics_port}",
            f"--serving-port={self.serving_port}",
        ]
        argv += [f"--namespace={ns}" for ns in self.namespaces]
        if self.selector:
            argv.append(f"--selector={self.selector}")
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PROJECTGEN_DATA_DIR": str(self.data_dir),
            "PROJECTGEN_POLICY_FILE": str(LOOPBACK_POLICY),
            **self.env,
        }
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115  (the child owns it)
        if self.netns is not None:
            argv = self.netns.wrap(argv)
        host = self.netns.address if self.netns is not None else "127.0.0.1"
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"operator exited with {self.proc.returncode}:\n{self.logs()[-4000:]}")
            try:
                with urllib.request.urlopen(f"http://{host}:{self.port}/healthz", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"operator not live after {timeout}s:\n{self.logs()[-4000:]}")

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def __enter__(self) -> OperatorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def custom(api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


def get(api: client.ApiClient, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        obj: dict[str, Any] = custom(api).get_namespaced_custom_object(
            GROUP, VERSION, namespace, plural, name
        )
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return obj


def wait_for(
    api: client.ApiClient,
    plural: str,
    namespace: str,
    name: str,
    predicate: Callable[[dict[str, Any]], bool],
    timeout: float = 60,
    what: str = "",
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        last = get(api, plural, namespace, name)
        if last is not None and predicate(last):
            return last
        time.sleep(0.2)
    status = json.dumps((last or {}).get("status"), indent=1)[:3000]
    raise AssertionError(f"{plural}/{name} not {what or 'as expected'} after {timeout}s; status: {status}")


def phase_is(*phases: str) -> Callable[[dict[str, Any]], bool]:
    def check(obj: dict[str, Any]) -> bool:
        status = obj.get("status") or {}
        return status.get("phase") in phases and status.get("observedGeneration") == obj["metadata"].get(
            "generation"
        )

    return check


def wait_phase(
    api: client.ApiClient, plural: str, namespace: str, name: str, *phases: str, timeout: float = 60
) -> dict[str, Any]:
    return wait_for(
        api, plural, namespace, name, phase_is(*phases), timeout, what=f"in phase {'/'.join(phases)}"
    )


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return {}


def create(api: client.ApiClient, plural: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    body = {"apiVersion": f"{GROUP}/{VERSION}", **body}
    obj: dict[str, Any] = custom(api).create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body)
    return obj


def project_body(
    name: str, sources: list[dict[str, Any]], project: str = "demo", **spec: Any
) -> dict[str, Any]:
    return {
        "kind": "GeneratedProject",
        "metadata": {"name": name},
        "spec": {"projectRef": {"name": project}, "sources": sources, **spec},
    }


def inline_source(files: dict[str, str], executable: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "inline": {
            "files": [
                {"path": p, "content": c, **({"executable": True} if p in executable else {})}
                for p, c in files.items()
            ]
        }
    }


def export_body(name: str, project: str, export_type: str, **spec: Any) -> dict[str, Any]:
    return {
        "kind": "RepositoryExport",
        "metadata": {"name": name},
        "spec": {"generatedProjectRef": {"name": project}, "exportType": export_type, **spec},
    }


CREATED_BY_KINDS = [pytest.param(PROJECTS, id="project"), pytest.param(EXPORTS, id="export")]
"""The kinds whose creator admission records (manifests/created-by/): createdBy tests run on each."""


def create_annotated(
    api: client.ApiClient, plural: str, namespace: str, name: str, annotations: dict[str, str]
) -> dict[str, Any]:
    """A small GeneratedProject or zip RepositoryExport ``name`` with ``annotations``, created by
    ``api``'s user; an export's project (``<name>-project``) is created first, by the same user."""
    files = [inline_source({"a.txt": "a"})]
    body = project_body(name, files)
    if plural == EXPORTS:
        create(api, PROJECTS, namespace, project_body(f"{name}-project", files))
        body = export_body(name, f"{name}-project", "zip")
    body["metadata"]["annotations"] = annotations
    return create(api, plural, namespace, body)


def events(api: client.ApiClient, namespace: str, name: str) -> list[Any]:
    items = (
        client.CoreV1Api(api)
        .list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}")
        .items
    )
    return list(items)


def wait_event(
    api: client.ApiClient, namespace: str, name: str, predicate: Callable[[Any], bool], timeout: float = 30
) -> Any:
    """Events are posted asynchronously, after the status patch: poll for the one expected."""
    deadline = time.monotonic() + timeout
    seen: list[Any] = []
    while time.monotonic() < deadline:
        seen = events(api, namespace, name)
        for event in seen:
            if predicate(event):
                return event
        time.sleep(0.2)
    raise AssertionError(
        f"no such Event for {name} after {timeout}s; got {[(e.reason, e.message) for e in seen]}"
    )


def regenerate(
    api: client.ApiClient, namespace: str, project: str, sources: list[dict[str, Any]], timeout: float = 60
) -> dict[str, Any]:
    """Change a project's sources and wait until the new generation is Completed."""
    before = get(api, PROJECTS, namespace, project) or {}
    target = int(before.get("metadata", {}).get("generation") or 0) + 1
    custom(api).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PROJECTS, project, {"spec": {"sources": sources}}
    )
    return wait_for(
        api,
        PROJECTS,
        namespace,
        project,
        lambda o: (
            (o.get("status") or {}).get("observedGeneration") == target
            and o["status"]["phase"] == "Completed"
        ),
        timeout,
        what=f"Completed at generation {target}",
    )


def wait_exported(
    api: client.ApiClient, namespace: str, export: str, project: dict[str, Any], timeout: float = 90
) -> dict[str, Any]:
    """Wait until an export is Completed for the project's current content."""
    content_hash = project["status"]["contentHash"]
    return wait_for(
        api,
        EXPORTS,
        namespace,
        export,
        lambda o: (
            (o.get("status") or {}).get("exportedContentHash") == content_hash
            and o["status"]["phase"] == "Completed"
        ),
        timeout,
        what=f"exported at {content_hash[:12]}",
    )


def expose(api: client.ApiClient, namespace: str, name: str, address: str, port: int) -> None:
    """A Service ``name`` (port 443) whose endpoint is ``address:port``, made by hand as the
    EndpointSlice controller would (no controller-manager runs here). The aggregator and webhook
    clients dial the endpoint address (``--enable-aggregator-routing``); it may not be loopback."""
    core = client.CoreV1Api(api)
    core.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": name},
            "spec": {"ports": [{"name": "https", "port": 443, "targetPort": port, "protocol": "TCP"}]},
        },
    )
    ports = [{"name": "https", "port": port, "protocol": "TCP"}]
    client.DiscoveryV1Api(api).create_namespaced_endpoint_slice(
        namespace,
        {
            "metadata": {"name": f"{name}-manual", "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
            "ports": ports,
        },
    )
