"""Reconcile latency and throughput of the operator on the local control plane.

For N in (1, 50, 200, 500): create N GeneratedProjects (10 small inline files each) and one zip
RepositoryExport per project, as fast as a client can, and measure
- apply-to-Ready per resource (client-side: create call -> watch event with Ready=True), p50 / p95,
- total time until all 2N are Ready,
- API requests the operator made per resource, from the API server's own
  `apiserver_request_total` counter (the benchmark itself only creates and watches),
- status patches per resource, and the operator's peak RSS (VmHWM).

Usage: python benchmarks/reconcile.py [--sizes 1,50,200,500] [--workers 4]
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes import client, watch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))

from projectgen_dev.controlplane import ControlPlane  # noqa: E402

GROUP, VERSION = "projectgen.io", "v1alpha1"
GOALS = (
    "p50 apply-to-Ready < 1 s at N=1; N=500 all Ready < 60 s; <= 3 status patches per resource; RSS < 200 MB"
)
_METRIC = re.compile(r"^apiserver_request_total\{([^}]*)\} (\d+(?:\.\d+)?(?:e[+-]?\d+)?)$")


def metrics(cp: ControlPlane) -> Counter[tuple[str, str, str]]:
    """(verb, resource, subresource) -> requests served so far."""
    cfg = cp.configuration()
    req = urllib.request.Request(  # noqa: S310  (https to our own apiserver)
        f"{cp.url}/metrics", headers={"Authorization": cfg.api_key["authorization"]}
    )
    import ssl

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


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def project(name: str) -> dict[str, Any]:
    files = [
        {"path": f"src/mod{i}.py", "content": f"# module {i} of {name}\nVALUE = {i}\n"} for i in range(10)
    ]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "GeneratedProject",
        "metadata": {"name": name},
        "spec": {"projectRef": {"name": "bench"}, "sources": [{"inline": {"files": files}}]},
    }


def export(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "RepositoryExport",
        "metadata": {"name": f"{name}-zip"},
        "spec": {"generatedProjectRef": {"name": name}, "exportType": "zip"},
    }


def ready(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    if status.get("observedGeneration") != obj["metadata"].get("generation"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def run_size(cp: ControlPlane, n: int, data: Path, workers: int) -> dict[str, Any]:
    api = cp.api_client()
    ns = f"bench-{n}-{int(time.time())}"
    client.CoreV1Api(api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    custom = client.CustomObjectsApi(api)
    log = open(data / f"operator-{n}.log", "wb")  # noqa: SIM115
    port = 18000 + n
    env = {
        **os.environ,
        "KUBECONFIG": str(cp.kubeconfig),
        "PROJECTGEN_DATA_DIR": str(data / f"vol-{n}"),
        "PROJECTGEN_WORKERS": str(workers),
    }
    op = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "projectgen",
            "run",
            "--log-format=plain",
            f"--liveness-port={port}",
            f"--namespace={ns}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    for _ in range(300):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    time.sleep(1)  # let the operator's watches settle before counting
    created: dict[tuple[str, str], float] = {}
    done: dict[tuple[str, str], float] = {}
    lock = threading.Lock()
    finished = threading.Event()

    def watcher(plural: str) -> None:
        w = watch.Watch()
        wapi = client.CustomObjectsApi(cp.api_client())
        try:
            for event in w.stream(
                wapi.list_namespaced_custom_object, GROUP, VERSION, ns, plural, timeout_seconds=600
            ):
                obj = event["object"]
                key = (plural, obj["metadata"]["name"])
                if ready(obj):
                    with lock:
                        if key not in done:
                            done[key] = time.monotonic()
                            if len(done) >= 2 * n:
                                finished.set()
                if finished.is_set():
                    w.stop()
                    return
        except Exception:
            return

    threads = [
        threading.Thread(target=watcher, args=(p,), daemon=True)
        for p in ("generatedprojects", "repositoryexports")
    ]
    for t in threads:
        t.start()
    time.sleep(0.5)
    before = metrics(cp)
    start = time.monotonic()

    def create(i: int) -> None:
        name = f"p{i:04d}"
        created[("generatedprojects", name)] = time.monotonic()
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, "generatedprojects", project(name))
        created[("repositoryexports", f"{name}-zip")] = time.monotonic()
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, "repositoryexports", export(name))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, range(n)))
    applied = time.monotonic() - start
    ok = finished.wait(max(120, n))
    total = time.monotonic() - start
    time.sleep(1)
    after = metrics(cp)
    rss = peak_rss_mb(op.pid)
    op.terminate()
    op.wait(30)
    log.close()
    delta = after - before
    ours = {
        k: v for k, v in delta.items() if not (k[0] in ("CREATE", "POST") and k[2] == "") and k[0] != "WATCH"
    }
    latencies = [done[k] - created[k] for k in done if k in created]
    project_lat = [done[k] - created[k] for k in done if k[0] == "generatedprojects"]
    status_patches = sum(v for (verb, _, sub), v in delta.items() if verb == "PATCH" and sub == "status")
    return {
        "n": n,
        "ok": ok and len(done) >= 2 * n,
        "ready": len(done),
        "apply_s": applied,
        "total_s": total,
        "p50": statistics.median(latencies) if latencies else float("nan"),
        "p95": statistics.quantiles(latencies, n=20)[-1]
        if len(latencies) >= 2
        else (latencies[0] if latencies else float("nan")),
        "project_p50": statistics.median(project_lat) if project_lat else float("nan"),
        "requests_per_resource": sum(ours.values()) / (2 * n),
        "status_patches_per_resource": status_patches / (2 * n),
        "breakdown": {f"{v} {r}{'/' + s if s else ''}": c for (v, r, s), c in sorted(ours.items()) if c},
        "rss_mb": rss,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1,50,200,500")
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory(prefix="projectgen-bench-reconcile-") as tmp, ControlPlane() as cp:
        cp.install(REPO / "crds")
        for n in sizes:
            row = run_size(cp, n, Path(tmp), args.workers)
            rows.append(row)
            print(
                f"N={n}: {'all Ready' if row['ok'] else 'NOT all Ready'} in {row['total_s']:.1f} s",
                file=sys.stderr,
                flush=True,
            )
            print("  operator requests:", row["breakdown"], file=sys.stderr)
    print(
        f"\nReconcile on the local control plane ({os.cpu_count()} cores, PROJECTGEN_WORKERS={args.workers}; goals: {GOALS})\n"
    )
    head = f"{'N':>5} {'all Ready':>10} {'apply s':>8} {'total s':>8} {'p50 s':>7} {'p95 s':>7} {'req/res':>8} {'status patches/res':>19} {'RSS MB':>7}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['n']:>5} {r['ok']!s:>10} {r['apply_s']:>8.2f} {r['total_s']:>8.2f} {r['p50']:>7.2f} {r['p95']:>7.2f} "
            f"{r['requests_per_resource']:>8.2f} {r['status_patches_per_resource']:>19.2f} {r['rss_mb']:>7.0f}"
        )
    by_n = {r["n"]: r for r in rows}
    print()
    if 1 in by_n:
        print(
            f"p50 apply-to-Ready at N=1 < 1 s: {'PASS' if by_n[1]['p50'] < 1 else 'MISS'} ({by_n[1]['p50']:.2f} s)"
        )
    if 500 in by_n:
        print(
            f"N=500 all Ready < 60 s: {'PASS' if by_n[500]['ok'] and by_n[500]['total_s'] < 60 else 'MISS'} ({by_n[500]['total_s']:.1f} s)"
        )
        print(
            f"operator RSS < 200 MB at N=500: {'PASS' if by_n[500]['rss_mb'] < 200 else 'MISS'} ({by_n[500]['rss_mb']:.0f} MB)"
        )
    worst = max(r["status_patches_per_resource"] for r in rows)
    print(f"<= 3 status patches per resource: {'PASS' if worst <= 3 else 'MISS'} (max {worst:.2f})")
    if len(rows) >= 2:
        a, b = rows[-2], rows[-1]
        print(
            f"cost growth {a['n']} -> {b['n']}: total time x{b['total_s'] / a['total_s']:.2f} for x{b['n'] / a['n']:.1f} resources; "
            f"requests/resource {a['requests_per_resource']:.2f} -> {b['requests_per_resource']:.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
