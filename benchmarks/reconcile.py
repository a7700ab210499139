"""Reconcile latency and throughput of the operator on the local control plane, against a bare client.

For each N: create N GeneratedProjects (10 small inline files each) and one zip RepositoryExport per
project, as fast as a client can, and measure until all 2N are Ready (observedGeneration current,
Ready=True), once with the operator and once with a *bare client* on the same control plane:
the kubernetes Python client with the operator's concurrency (PROJECTGEN_WORKERS threads) making the
minimum writes for the same end state and no files: per project a status write for Generating and one
for Completed; per export one metadata patch (ownerReference + label) and a status write for
Exporting and one for Completed. The ratio operator / bare is the figure to read on a shared machine.

Measured per run:
- apply-to-Ready per resource (client-side: create call -> watch event with Ready=True), p50 / p95,
- total time until all 2N are Ready,
- API requests per resource besides the benchmark's own creates and watches, from the API server's
  own `apiserver_request_total` counter,
- the operator's peak RSS (VmHWM), and the load average of the machine.

`--restart N` instead measures a restart of the operator over N settled resources (a third
Completed, a third Failed, a third Archived projects, with a zip export each): writes to them during
the restart (resourceVersions compared), renders/archives (Events), the time until a new
GeneratedProject applied at the restart is Ready, and memory.

Usage: python benchmarks/reconcile.py [--sizes 50,200,500,2000 | --quick] [--workers 4] [--restart 5000]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kubernetes import client, watch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))

from projectgen_dev.controlplane import ControlPlane  # noqa: E402
from projectgen_dev.gitserver import GitHTTPServer  # noqa: E402

GROUP, VERSION = "projectgen.io", "v1alpha1"
PROJECTS, EXPORTS = "generatedprojects", "repositoryexports"
BURST_GOALS = "p50 < 5 s at N=500; growth linear to N=1000; RSS < 250 MB"
GOALS = (
    "all Ready within 2x the bare client; p50 < 5 s at N=500; <= 4 requests per resource; "
    "N=2000 within 10% of the line through the others; RSS < 250 MB at N=2000"
)
_METRIC = re.compile(r"^apiserver_request_total\{([^}]*)\} (\d+(?:\.\d+)?(?:e[+-]?\d+)?)$")


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def metrics(cp: ControlPlane) -> Counter[tuple[str, str, str]]:
    """(verb, resource, subresource) -> requests served so far."""
    cfg = cp.configuration()
    req = urllib.request.Request(  # noqa: S310  (https to our own apiserver)
        f"{cp.url}/metrics", headers={"Authorization": cfg.api_key["authorization"]}
    )
    ctx = (
        ssl.create_default_context(cafile=cfg.ssl_ca_cert)
        if cfg.ssl_ca_cert
        else ssl._create_unverified_context()  # noqa: S323
    )
    with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:  # noqa: S310
        text = resp.read().decode()
    out: Counter[tuple[str, str, str]] = Counter()
    for line in text.splitlines():
        m = _METRIC.match(line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if labels.get("group") not in (GROUP, ""):
            continue
        out[(labels.get("verb", ""), labels.get("resource", ""), labels.get("subresource", ""))] += int(
            float(m.group(2))
        )
    return out


def counted(delta: Counter[tuple[str, str, str]]) -> dict[tuple[str, str, str], int]:
    """The requests of the actor under test on the objects it works with (not the API server's own
    housekeeping): not the benchmark's own creates, not the watches."""
    return {
        k: v
        for k, v in delta.items()
        if v > 0
        and k[1] in (PROJECTS, EXPORTS, "events", "configmaps", "secrets")
        and not (k[0] in ("CREATE", "POST") and k[1] in (PROJECTS, EXPORTS))
        and k[0] != "WATCH"
    }


def events_of(requests: dict[tuple[str, str, str], int]) -> int:
    return sum(v for (verb, resource, _), v in requests.items() if resource == "events")


def breakdown(requests: dict[tuple[str, str, str], int]) -> dict[str, int]:
    return {f"{v} {r}{'/' + s if s else ''}": c for (v, r, s), c in sorted(requests.items())}


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def project(name: str, files: int = 10, *, failing: bool = False, archived: bool = False) -> dict[str, Any]:
    source: dict[str, Any]
    if failing:  # a key the ConfigMap does not have: the operator ends in Failed
        source = {"configMap": {"name": "bench", "items": [{"key": "missing", "path": "x"}]}}
    else:
        inline = [
            {"path": f"src/mod{i}.py", "content": f"# module {i} of {name}\nVALUE = {i}\n"}
            for i in range(files)
        ]
        source = {"inline": {"files": inline}}
    spec: dict[str, Any] = {"projectRef": {"name": "bench"}, "sources": [source]}
    if archived:
        spec["archived"] = True
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "GeneratedProject",
        "metadata": {"name": name},
        "spec": spec,
    }


def export(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "RepositoryExport",
        "metadata": {"name": f"{name}-zip"},
        "spec": {"generatedProjectRef": {"name": name}, "exportType": "zip"},
    }


def settled(obj: dict[str, Any], *, ready_only: bool = True) -> bool:
    status = obj.get("status") or {}
    if status.get("observedGeneration") != obj["metadata"].get("generation"):
        return False
    if not ready_only:
        return status.get("phase") in ("Completed", "Failed", "Archived")
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def new_namespace(cp: ControlPlane, label: str) -> str:
    ns = f"bench-{label}-{int(time.time() * 1000) % 10**9}"
    core = client.CoreV1Api(cp.api_client())
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    core.create_namespaced_config_map(
        ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="bench"), data={"a": "x"})
    )
    return ns


# A template that moves (the burst) ---------------------------------------------------------------

GIT_ENV = {
    **os.environ,
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
}
POLICY = REPO / "tests" / "integration" / "loopback-policy.yaml"


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, env=GIT_ENV, check=True, capture_output=True)


def template(server: GitHTTPServer, work: Path, name: str) -> str:
    work.mkdir(parents=True)
    (work / "copier.yml").write_text("name:\n  type: str\n  default: svc\n")
    (work / "VERSION.jinja").write_text("1.0.0\n")
    git(work, "init", "-q", "-b", "main")
    git(work, "add", "-A")
    git(work, "commit", "-qm", "v1.0.0")
    git(work, "tag", "v1.0.0")
    server.create_bare(name)
    git(work, "push", "-q", "--tags", str(server.repo_path(name)), "main")
    return server.url(name)


def release(server: GitHTTPServer, work: Path, name: str, tag: str) -> None:
    (work / "VERSION.jinja").write_text(tag.lstrip("v") + "\n")
    git(work, "commit", "-qam", tag)
    git(work, "tag", tag)
    git(work, "push", "-q", "--tags", str(server.repo_path(name)), "main")


def follower(name: str, url: str, interval: str, project: str = "burst") -> dict[str, Any]:
    """A GeneratedProject that follows the template's 1.x tags, checked every `interval`."""
    source = {"template": {"url": url, "ref": ">=1,<2", "updateInterval": interval}}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "GeneratedProject",
        "metadata": {"name": name},
        "spec": {"projectRef": {"name": project}, "sources": [source]},
    }


# The actors under test ---------------------------------------------------------------------------


class Operator:
    """`projectgen run` for one namespace, as a user runs it."""

    def __init__(
        self, cp: ControlPlane, ns: str, data: Path, workers: int, tag: str, env: dict[str, str] | None = None
    ) -> None:
        self.cp, self.ns, self.data, self.workers, self.tag = cp, ns, data, workers, tag
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def start(self, wait: bool = True) -> None:
        port = 18000 + (os.getpid() + int(time.time() * 1000)) % 20000
        log = open(self.data / f"operator-{self.tag}.log", "ab")  # noqa: SIM115
        env = {
            **os.environ,
            "KUBECONFIG": str(self.cp.kubeconfig),
            "PROJECTGEN_DATA_DIR": str(self.data / f"vol-{self.ns}"),
            "PROJECTGEN_WORKERS": str(self.workers),
            **self.env,
        }
        argv = [
            sys.executable,
            "-m",
            "projectgen",
            "run",
            "--log-format=plain",
            f"--liveness-port={port}",
            "--metrics-port=0",  # several operators at once: 9090 would clash
            f"--namespace={self.ns}",
        ]
        self.started = time.monotonic()
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        self.port = port
        if wait:
            self.wait_live()

    def wait_live(self) -> float:
        for _ in range(1200):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1)
                return time.monotonic() - self.started
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("operator not live")

    def rss(self) -> float:
        return peak_rss_mb(self.proc.pid) if self.proc else 0.0

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(60)


class Bare:
    """The least a controller can do for the same end state, with the operator's concurrency.

    It watches both kinds like the operator, keeps what it learnt in memory, and writes only:
    project status Generating, project status Completed; export metadata (ownerReference + label),
    export status Exporting, export status Completed. No files, no Events."""

    def __init__(self, cp: ControlPlane, ns: str, workers: int) -> None:
        self.cp, self.ns = cp, ns
        self.pool = ThreadPoolExecutor(workers)
        self.api = client.CustomObjectsApi(cp.api_client())
        self.lock = threading.Lock()
        self.completed: dict[str, str] = {}  # project -> uid, once Completed
        self.waiting: dict[str, list[dict[str, Any]]] = {}  # project -> exports waiting for it
        self.seen: set[tuple[str, str]] = set()
        self.stopping = threading.Event()
        self.threads = [
            threading.Thread(target=self._watch, args=(p,), daemon=True) for p in (PROJECTS, EXPORTS)
        ]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def stop(self) -> None:
        self.stopping.set()
        self.pool.shutdown(wait=True)

    def rss(self) -> float:
        return 0.0

    def _watch(self, plural: str) -> None:
        api = client.CustomObjectsApi(self.cp.api_client())
        w = watch.Watch()
        with contextlib.suppress(Exception):  # the control plane stops under the last watch
            self._events(w, api, plural)

    def _events(self, w: watch.Watch, api: client.CustomObjectsApi, plural: str) -> None:
        for event in w.stream(
            api.list_namespaced_custom_object, GROUP, VERSION, self.ns, plural, timeout_seconds=900
        ):
            if self.stopping.is_set():
                w.stop()
                return
            obj = event["object"]
            key = (plural, obj["metadata"]["name"])
            if event["type"] != "ADDED" or key in self.seen:
                continue
            self.seen.add(key)
            self.pool.submit(self._project if plural == PROJECTS else self._export, obj)

    @staticmethod
    def _status(phase: str, ready: str, generation: int, **fields: Any) -> dict[str, Any]:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        conditions = [
            {
                "type": t,
                "status": s,
                "reason": phase,
                "message": "",
                "observedGeneration": generation,
                "lastTransitionTime": stamp,
            }
            for t, s in (
                ("Ready", ready),
                ("Reconciling", "False" if ready == "True" else "True"),
                ("Stalled", "False"),
            )
        ]
        return {
            "status": {"phase": phase, "observedGeneration": generation, "conditions": conditions, **fields}
        }

    def _project(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        name, gen = meta["name"], meta["generation"]
        self.api.patch_namespaced_custom_object_status(
            GROUP, VERSION, self.ns, PROJECTS, name, self._status("Generating", "Unknown", gen)
        )
        files = [
            {"path": f"src/mod{i}.py", "name": f"mod{i}.py", "type": "python", "size": 30, "sha256": "0" * 64}
            for i in range(10)
        ]
        done = self._status(
            "Completed",
            "True",
            gen,
            outputDirectory=f"/nonexistent/{name}",
            totalFiles=10,
            totalSize=300,
            contentHash="0" * 64,
            files=files,
            filesTruncated=False,
        )
        self.api.patch_namespaced_custom_object_status(GROUP, VERSION, self.ns, PROJECTS, name, done)
        with self.lock:
            self.completed[name] = meta["uid"]
            waiting = self.waiting.pop(name, [])
        for exp in waiting:
            self._export(exp)

    def _export(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        name, gen = meta["name"], meta["generation"]
        target = obj["spec"]["generatedProjectRef"]["name"]
        with self.lock:
            uid = self.completed.get(target)
            if uid is None:
                self.waiting.setdefault(target, []).append(obj)
                return
        ref = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "GeneratedProject",
            "name": target,
            "uid": uid,
            "controller": True,
            "blockOwnerDeletion": False,
        }
        self.api.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            self.ns,
            EXPORTS,
            name,
            {"metadata": {"ownerReferences": [ref], "labels": {"projectgen.io/generated-project": target}}},
        )
        self.api.patch_namespaced_custom_object_status(
            GROUP, VERSION, self.ns, EXPORTS, name, self._status("Exporting", "Unknown", gen)
        )
        done = self._status(
            "Completed",
            "True",
            gen,
            archivePath=f"/nonexistent/{name}.zip",
            archiveSize=1,
            archiveSha256="0" * 64,
            exportedContentHash="0" * 64,
        )
        self.api.patch_namespaced_custom_object_status(GROUP, VERSION, self.ns, EXPORTS, name, done)

    def burst(self, names: list[str], content_hash: str) -> dict[tuple[str, str], float]:
        """The minimum writes after a template moved, with the same concurrency: per project a
        status write for Generating and one for Completed on the new content, then per export one
        for Exporting and one for Completed. Returns when each resource was done."""
        done: dict[tuple[str, str], float] = {}

        def one(name: str) -> None:
            api = self.api
            api.patch_namespaced_custom_object_status(
                GROUP, VERSION, self.ns, PROJECTS, name, self._status("Generating", "Unknown", 1)
            )
            fields = {"contentHash": content_hash, "outputDirectory": f"/nonexistent/{name}"}
            completed = self._status("Completed", "True", 1, **fields)
            api.patch_namespaced_custom_object_status(GROUP, VERSION, self.ns, PROJECTS, name, completed)
            done[(PROJECTS, name)] = time.monotonic()
            export = f"{name}-zip"
            api.patch_namespaced_custom_object_status(
                GROUP, VERSION, self.ns, EXPORTS, export, self._status("Exporting", "Unknown", 1)
            )
            completed = self._status("Completed", "True", 1, exportedContentHash=content_hash)
            api.patch_namespaced_custom_object_status(GROUP, VERSION, self.ns, EXPORTS, export, completed)
            done[(EXPORTS, export)] = time.monotonic()

        list(self.pool.map(one, names))
        return done


# Measuring -------------------------------------------------------------------------------------


@contextmanager
def readiness(
    cp: ControlPlane, ns: str, expected: int, predicate: Callable[[dict[str, Any]], bool]
) -> Iterator[tuple[dict[tuple[str, str], float], threading.Event]]:
    """Watch both kinds; record when each object first satisfies `predicate`."""
    done: dict[tuple[str, str], float] = {}
    lock = threading.Lock()
    finished = threading.Event()
    stop = threading.Event()

    def watcher(plural: str) -> None:
        api = client.CustomObjectsApi(cp.api_client())
        while not stop.is_set():  # a watch that ends or breaks (timeout, 410 Gone) lists again
            w = watch.Watch()
            try:
                for event in w.stream(
                    api.list_namespaced_custom_object, GROUP, VERSION, ns, plural, timeout_seconds=300
                ):
                    obj = event["object"]
                    key = (plural, obj["metadata"]["name"])
                    if predicate(obj):
                        with lock:
                            if key not in done:
                                done[key] = time.monotonic()
                                if len(done) >= expected:
                                    finished.set()
                    if stop.is_set():
                        w.stop()
                        return
            except Exception:
                time.sleep(0.5)

    threads = [threading.Thread(target=watcher, args=(p,), daemon=True) for p in (PROJECTS, EXPORTS)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    try:
        yield done, finished
    finally:
        stop.set()


def create_all(cp: ControlPlane, ns: str, bodies: list[dict[str, Any]]) -> dict[tuple[str, str], float]:
    custom = client.CustomObjectsApi(cp.api_client())
    created: dict[tuple[str, str], float] = {}
    pairs = [(bodies[i], bodies[i + 1]) for i in range(0, len(bodies), 2)]

    def create(pair: tuple[dict[str, Any], dict[str, Any]]) -> None:
        for body in pair:
            plural = PROJECTS if body["kind"] == "GeneratedProject" else EXPORTS
            created[(plural, body["metadata"]["name"])] = time.monotonic()
            custom.create_namespaced_custom_object(GROUP, VERSION, ns, plural, body)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, pairs))
    return created


def run_size(cp: ControlPlane, n: int, data: Path, workers: int, actor: str) -> dict[str, Any]:
    ns = new_namespace(cp, f"{actor}-{n}")
    runner: Operator | Bare = (
        Operator(cp, ns, data, workers, f"{n}") if actor == "operator" else Bare(cp, ns, workers)
    )
    runner.start()
    time.sleep(1)  # let the watches settle before counting
    bodies = [b for i in range(n) for b in (project(f"p{i:04d}"), export(f"p{i:04d}"))]
    load_before = load()
    with readiness(cp, ns, 2 * n, settled) as (done, finished):
        before = metrics(cp)
        start = time.monotonic()
        created = create_all(cp, ns, bodies)
        applied = time.monotonic() - start
        ok = finished.wait(max(180, 2 * n))
        total = time.monotonic() - start
        time.sleep(1)
        after = metrics(cp)
    rss = runner.rss()
    runner.stop()
    requests = counted(after - before)
    latencies = [done[k] - created[k] for k in done if k in created]
    return {
        "actor": actor,
        "n": n,
        "ok": ok and len(done) >= 2 * n,
        "ready": len(done),
        "apply_s": applied,
        "total_s": total,
        "p50": statistics.median(latencies) if latencies else float("nan"),
        "p95": statistics.quantiles(latencies, n=20)[-1] if len(latencies) >= 2 else float("nan"),
        "requests_per_resource": (sum(requests.values()) - events_of(requests)) / (2 * n),
        "events_per_resource": events_of(requests) / (2 * n),
        "breakdown": breakdown(requests),
        "rss_mb": rss,
        "load": f"{load_before} -> {load()}",
    }


def quiet(cp: ControlPlane, deadline: float) -> None:
    """Wait until no request counter of ours moves for 5 s."""
    last = metrics(cp)
    while time.monotonic() < deadline:
        time.sleep(5)
        now = metrics(cp)
        if sum(counted(now - last).values()) == 0:
            return
        last = now


def run_restart(cp: ControlPlane, n: int, data: Path, workers: int) -> dict[str, Any]:
    """N settled resources (projects Completed / Failed / Archived, a zip export each), then a restart."""
    ns = new_namespace(cp, f"restart-{n}")
    op = Operator(cp, ns, data, workers, f"restart-{n}")
    op.start()
    pairs = n // 2
    bodies = []
    for i in range(pairs):
        name = f"s{i:05d}"
        bodies += [project(name, failing=i % 3 == 1, archived=i % 3 == 2), export(name)]
    print(f"restart: settling {2 * pairs} resources ...", file=sys.stderr, flush=True)
    begin = time.monotonic()
    with readiness(cp, ns, 2 * pairs, lambda o: settled(o, ready_only=False)) as (_, finished):
        create_all(cp, ns, bodies)
        if not finished.wait(max(600, 2 * n)):
            raise RuntimeError("the resources did not settle")
    # Settled is also kopf's own bookkeeping (diff bases, wake-ups): wait until the operator is quiet.
    quiet(cp, time.monotonic() + 600)
    settle_s = time.monotonic() - begin
    op.stop()
    custom = client.CustomObjectsApi(cp.api_client())

    def versions() -> dict[tuple[str, str], str]:
        out = {}
        for plural in (PROJECTS, EXPORTS):
            listed: Any = custom.list_namespaced_custom_object(GROUP, VERSION, ns, plural)
            for item in listed["items"]:
                out[(plural, item["metadata"]["name"])] = item["metadata"]["resourceVersion"]
        return out

    core = client.CoreV1Api(cp.api_client())
    events_before = {e.metadata.name for e in core.list_namespaced_event(ns).items}
    rv_before = versions()
    before = metrics(cp)
    load_before = load()
    fresh = Operator(cp, ns, data, workers, f"restart-{n}")
    fresh.start(wait=False)
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, PROJECTS, project("fresh"))
    live_s = fresh.wait_live()
    ready_s = float("nan")
    deadline = time.monotonic() + 300
    polls = 0
    while time.monotonic() < deadline:
        polls += 1
        obj: Any = custom.get_namespaced_custom_object(GROUP, VERSION, ns, PROJECTS, "fresh")
        if settled(obj):
            ready_s = time.monotonic() - fresh.started
            break
        time.sleep(0.05)
    quiet(cp, deadline)
    quiet_s = time.monotonic() - fresh.started - 5
    after = metrics(cp)
    rss = fresh.rss()
    rv_after = versions()
    events = core.list_namespaced_event(ns).items
    fresh.stop()
    delta = after - before
    delta[("GET", PROJECTS, "")] -= polls  # the benchmark's own reads of the new project
    requests = counted(delta)
    writes = {
        k: v for k, v in requests.items() if k[0] in ("PATCH", "UPDATE", "APPLY", "DELETE", "POST", "CREATE")
    }
    changed = [k for k, v in rv_before.items() if rv_after.get(k) != v]
    work = [
        e
        for e in events
        if e.metadata.name not in events_before
        and e.involved_object.name not in ("fresh", "fresh-zip")
        and e.reason in ("Generating", "Exporting", "Archived")
    ]
    return {
        "n": 2 * pairs,
        "settle_s": settle_s,
        "live_s": live_s,
        "fresh_ready_s": ready_s,
        "quiet_s": quiet_s,
        "writes": sum(writes.values()),
        "writes_per_resource": sum(writes.values()) / (2 * pairs),
        "changed_objects": len(changed),
        "work_events": len(work),
        "breakdown": breakdown(requests),
        "rss_mb": rss,
        "load": f"{load_before} -> {load()}",
    }


def exported_hashes(cp: ControlPlane, ns: str) -> dict[str, str]:
    custom = client.CustomObjectsApi(cp.api_client())
    listed: Any = custom.list_namespaced_custom_object(GROUP, VERSION, ns, EXPORTS)
    return {
        o["metadata"]["name"]: (o.get("status") or {}).get("exportedContentHash") for o in listed["items"]
    }


def delivered(old: dict[str, str], tag: str) -> Callable[[dict[str, Any]], bool]:
    """Ready again after the move: a project on `tag`, an export of content other than before."""

    def check(obj: dict[str, Any]) -> bool:
        if not settled(obj):
            return False
        status = obj.get("status") or {}
        if obj.get("kind") == "GeneratedProject":
            return bool((status.get("template") or {}).get("tag") == tag)
        return status.get("exportedContentHash") not in (None, old.get(obj["metadata"]["name"]))

    return check


def run_burst(cp: ControlPlane, n: int, data: Path, workers: int, interval: str) -> dict[str, Any]:
    """N settled projects following one template, a zip export each; a new tag is pushed; until
    every project is Completed on it and every export delivered its new content."""
    ns = new_namespace(cp, f"burst-{n}")
    name = f"templates/burst-{n}"
    with GitHTTPServer(data / f"git-burst-{n}") as server:
        url = template(server, data / f"work-burst-{n}", name)
        env = {"PROJECTGEN_POLICY_FILE": str(POLICY), "PROJECTGEN_TEMPLATE_MIN_INTERVAL": "1s"}
        op = Operator(cp, ns, data, workers, f"burst-{n}", env=env)
        op.start()
        try:
            bodies = [
                b for i in range(n) for b in (follower(f"p{i:04d}", url, interval), export(f"p{i:04d}"))
            ]
            print(f"burst N={n}: settling {2 * n} resources ...", file=sys.stderr, flush=True)
            with readiness(cp, ns, 2 * n, settled) as (_, finished):
                create_all(cp, ns, bodies)
                if not finished.wait(max(600, 3 * n)):
                    raise RuntimeError("the fleet did not settle")
            quiet(cp, time.monotonic() + 300)
            every = 2.0
            before = metrics(cp)
            time.sleep(3 * every)  # a settled fleet, three check intervals: what does it cost?
            idle = counted(metrics(cp) - before)
            old = exported_hashes(cp, ns)
            load_before = load()
            with readiness(cp, ns, 2 * n, delivered(old, "v1.1.0")) as (done, finished):
                before = metrics(cp)
                start = time.monotonic()
                release(server, data / f"work-burst-{n}", name, "v1.1.0")
                ok = finished.wait(max(600, 3 * n))
                total = time.monotonic() - start
                time.sleep(1)
                after = metrics(cp)
            rss = op.rss()
        finally:
            op.stop()
    requests = counted(after - before)
    latencies = [t - start for t in done.values()]
    return {
        "actor": "operator",
        "n": n,
        "ok": ok and len(done) >= 2 * n,
        "total_s": total,
        "p50": statistics.median(latencies) if latencies else float("nan"),
        "p95": statistics.quantiles(latencies, n=20)[-1] if len(latencies) >= 2 else float("nan"),
        "requests_per_resource": (sum(requests.values()) - events_of(requests)) / (2 * n),
        "events_per_resource": events_of(requests) / (2 * n),
        "idle_per_interval": sum(v for k, v in idle.items() if k[0] != "LIST") / 3,
        "breakdown": breakdown(requests),
        "idle_breakdown": breakdown(idle),
        "rss_mb": rss,
        "load": f"{load_before} -> {load()}",
    }


def run_burst_bare(cp: ControlPlane, n: int, workers: int) -> dict[str, Any]:
    ns = new_namespace(cp, f"burst-bare-{n}")
    bare = Bare(cp, ns, workers)
    bare.start()
    time.sleep(1)
    bodies = [b for i in range(n) for b in (project(f"p{i:04d}", files=1), export(f"p{i:04d}"))]
    with readiness(cp, ns, 2 * n, settled) as (_, finished):
        create_all(cp, ns, bodies)
        finished.wait(max(180, 2 * n))
    time.sleep(1)
    load_before = load()
    before = metrics(cp)
    start = time.monotonic()
    done = bare.burst([f"p{i:04d}" for i in range(n)], "1" * 64)
    total = time.monotonic() - start
    time.sleep(1)
    requests = counted(metrics(cp) - before)
    bare.stop()
    latencies = [t - start for t in done.values()]
    return {
        "actor": "bare",
        "n": n,
        "ok": len(done) >= 2 * n,
        "total_s": total,
        "p50": statistics.median(latencies),
        "p95": statistics.quantiles(latencies, n=20)[-1],
        "requests_per_resource": sum(requests.values()) / (2 * n),
        "breakdown": breakdown(requests),
        "load": f"{load_before} -> {load()}",
    }


def print_burst(rows: list[dict[str, dict[str, Any]]], workers: int) -> None:
    print(
        f"\nBurst: N settled projects following one template (a zip export each), a new tag pushed; "
        f"until all are delivered again ({os.cpu_count()} cores, PROJECTGEN_WORKERS={workers}; "
        f"goals: {BURST_GOALS})\n"
    )
    head = (
        f"{'N':>5} {'bare s':>7} {'operator s':>10} {'ratio':>6} {'p50 s':>6} {'p95 s':>6} "
        f"{'bare req/res':>12} {'op req/res':>10} {'+Events/res':>11} {'idle req/2s':>11} {'RSS MB':>7}  load"
    )
    print(head)
    print("-" * len(head))
    for pair in rows:
        b, o = pair["bare"], pair["operator"]
        flag = "" if o["ok"] and b["ok"] else " (NOT all delivered)"
        print(
            f"{o['n']:>5} {b['total_s']:>7.2f} {o['total_s']:>10.2f} {o['total_s'] / b['total_s']:>6.2f} "
            f"{o['p50']:>6.2f} {o['p95']:>6.2f} {b['requests_per_resource']:>12.2f} "
            f"{o['requests_per_resource']:>10.2f} {o['events_per_resource']:>11.2f} "
            f"{o['idle_per_interval']:>11.1f} {o['rss_mb']:>7.0f}  {o['load']}{flag}"
        )
    print(
        "\np50/p95: from the push of the new tag to each resource delivered (the check interval is 2 s: "
        "up to 2 s of it is the wait for the next check)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="50,200,500,2000")
    parser.add_argument("--quick", action="store_true", help="sizes 20,100 (a smoke run)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument(
        "--restart",
        type=int,
        default=0,
        metavar="N",
        help="measure a restart over N settled resources instead",
    )
    parser.add_argument(
        "--burst",
        default="",
        metavar="N,N",
        help="measure a template move across N settled projects with exports instead (e.g. 100,500,1000)",
    )
    args = parser.parse_args()
    sizes = [20, 100] if args.quick else [int(s) for s in args.sizes.split(",")]
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="projectgen-bench-reconcile-") as tmp, ControlPlane() as cp:
        cp.install(REPO / "crds")
        if args.burst:
            bursts = []
            for n in (int(s) for s in args.burst.split(",")):
                pair = {
                    "bare": run_burst_bare(cp, n, args.workers),
                    "operator": run_burst(cp, n, Path(tmp), args.workers, "2s"),
                }
                for actor, row in pair.items():
                    print(f"burst N={n} {actor}: {row['total_s']:.1f} s, {row['breakdown']}", file=sys.stderr)
                print(f"  idle: {pair['operator']['idle_breakdown']}", file=sys.stderr, flush=True)
                bursts.append(pair)
            print_burst(bursts, args.workers)
            return 0
        if args.restart:
            r = run_restart(cp, args.restart, Path(tmp), args.workers)
            print("  requests during the restart:", r["breakdown"], file=sys.stderr)
            print(
                f"\nOperator restart over {r['n']} settled resources ({os.cpu_count()} cores, load {r['load']})\n"
            )
            print(f"settling them first took {r['settle_s']:.1f} s")
            print(f"live (healthz) after start:         {r['live_s']:.2f} s")
            print(
                f"new GeneratedProject Ready after:   {r['fresh_ready_s']:.2f} s   (goal <= 5 s: {'PASS' if r['fresh_ready_s'] <= 5 else 'MISS'})"
            )
            print(f"restart work over after:            {r['quiet_s']:.1f} s")
            print(
                f"writes during the restart:          {r['writes']} = {r['writes_per_resource']:.3f}/resource   (goal <= 0.05: {'PASS' if r['writes_per_resource'] <= 0.05 else 'MISS'})"
            )
            print(
                f"settled objects changed:            {r['changed_objects']}   renders/archives started: {r['work_events']}"
            )
            print(f"operator peak RSS:                  {r['rss_mb']:.0f} MB")
            return 0
        rows = []
        for n in sizes:
            pair = {}
            for actor in ("bare", "operator"):
                row = run_size(cp, n, Path(tmp), args.workers, actor)
                pair[actor] = row
                print(
                    f"N={n} {actor}: {'all Ready' if row['ok'] else 'NOT all Ready'} in {row['total_s']:.1f} s (load {row['load']})",
                    file=sys.stderr,
                    flush=True,
                )
                print(f"  {actor} requests:", row["breakdown"], file=sys.stderr, flush=True)
            rows.append(pair)
    print(
        f"\nReconcile on the local control plane ({os.cpu_count()} cores, PROJECTGEN_WORKERS={args.workers}; goals: {GOALS})\n"
    )
    head = (
        f"{'N':>5} {'bare s':>7} {'operator s':>10} {'ratio':>6} {'p50 s':>6} {'p95 s':>6} "
        f"{'bare req/res':>12} {'op req/res':>10} {'+Events/res':>11} {'RSS MB':>7}  load avg (1/5/15 min) during operator run"
    )
    print(head)
    print("-" * len(head))
    for pair in rows:
        b, o = pair["bare"], pair["operator"]
        flag = "" if o["ok"] and b["ok"] else " (NOT all Ready)"
        print(
            f"{o['n']:>5} {b['total_s']:>7.2f} {o['total_s']:>10.2f} {o['total_s'] / b['total_s']:>6.2f} {o['p50']:>6.2f} {o['p95']:>6.2f} "
            f"{b['requests_per_resource']:>12.2f} {o['requests_per_resource']:>10.2f} {o['events_per_resource']:>11.2f} "
            f"{o['rss_mb']:>7.0f}  {o['load']}{flag}"
        )
    print()
    ops = [p["operator"] for p in rows]
    worst_ratio = max(p["operator"]["total_s"] / p["bare"]["total_s"] for p in rows)
    print(
        f"all Ready within 2x the bare client: {'PASS' if worst_ratio <= 2 else 'MISS'} (worst {worst_ratio:.2f}x)"
    )
    worst = max(o["requests_per_resource"] for o in ops)
    print(
        f"<= 4 API requests per resource: {'PASS' if worst <= 4 else 'MISS'} (max {worst:.2f}, Events not counted)"
    )
    worst_all = max(o["requests_per_resource"] + o["events_per_resource"] for o in ops)
    print(
        f"<= 4 API requests per resource, Events included: {'PASS' if worst_all <= 4 else 'MISS'} (max {worst_all:.2f})"
    )
    by_n = {o["n"]: o for o in ops}
    if 500 in by_n:
        print(
            f"p50 apply-to-Ready at N=500 < 5 s: {'PASS' if by_n[500]['p50'] < 5 else 'MISS'} ({by_n[500]['p50']:.2f} s)"
        )
    if 2000 in by_n:
        print(
            f"operator RSS < 250 MB at N=2000: {'PASS' if by_n[2000]['rss_mb'] < 250 else 'MISS'} ({by_n[2000]['rss_mb']:.0f} MB)"
        )
        others = [o for o in ops if o["n"] != 2000]
        if len(others) >= 2:
            xs, ys = [o["n"] for o in others], [o["total_s"] for o in others]
            mx, my = statistics.fmean(xs), statistics.fmean(ys)
            slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
                (x - mx) ** 2 for x in xs
            )
            predicted = my + slope * (2000 - mx)
            off = by_n[2000]["total_s"] / predicted - 1
            print(
                f"N=2000 within 10% of the line through the others: {'PASS' if abs(off) <= 0.1 else 'MISS'} ({off:+.0%})"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
