"""The cost of following a template at fleet scale: N GeneratedProjects on one template.

For each N: one template repository on the project's git server (operator/projectgen_dev/gitserver.py),
N projects with `ref: ">=1,<2"` and `updateInterval` INTERVAL, all rendered; then, in the steady
state, K intervals are watched and counted:
- Kubernetes API requests of the operator (the API server's own `apiserver_request_total`, as
  benchmarks/reconcile.py counts them: not the watches, not the benchmark's creates),
- remote listings (sessions at the git server: every git session starts with GET info/refs).
With `--move`, a tag v1.1.0 is then pushed and the time until every project is Completed on it is
measured (one interval at most to notice, plus the renders), with its API requests per project.

Usage: python benchmarks/fleet.py [--sizes 100,1000] [--interval 10s] [--intervals 5] [--move 100]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kubernetes import client

from projectgen.generation.follow import parse_duration
from projectgen_dev.controlplane import ControlPlane
from projectgen_dev.gitserver import GitHTTPServer
from reconcile import (
    EXPORTS,
    GROUP,
    POLICY,
    PROJECTS,
    REPO,
    VERSION,
    Operator,
    breakdown,
    counted,
    create_all,
    follower,
    load,
    metrics,
    new_namespace,
    quiet,
    release,
    template,
)


def wait_all(cp: ControlPlane, ns: str, n: int, tag: str, timeout: float) -> float:
    """Seconds until all N projects are Completed on `tag`."""
    api = client.CustomObjectsApi(cp.api_client())
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        items = api.list_namespaced_custom_object(GROUP, VERSION, ns, PROJECTS)["items"]
        done = sum(
            1
            for o in items
            if (o.get("status") or {}).get("phase") == "Completed"
            and ((o.get("status") or {}).get("template") or {}).get("tag") == tag
        )
        if done >= n:
            return time.monotonic() - start
        time.sleep(2)
    raise RuntimeError(f"not all {n} projects Completed on {tag} after {timeout:.0f} s")


def operator_requests(delta: Any) -> dict[tuple[str, str, str], int]:
    """`counted` without what the benchmark itself does here: its LIST polls, its metrics reads'
    token (secrets); the operator reads no Secret for a project."""
    return {
        k: v for k, v in counted(delta).items() if k[0] != "LIST" and k[1] in (PROJECTS, EXPORTS, "events")
    }


def listings(server: GitHTTPServer, name: str, since: float) -> int:
    return len(server.requests_since(since, f"GET /{name}.git/info/refs"))


def run(cp: ControlPlane, tmp: Path, n: int, interval: str, k: int, move: bool) -> dict[str, Any]:
    every = parse_duration(interval)
    ns = new_namespace(cp, f"fleet-{n}")
    name = f"templates/fleet-{n}"
    with GitHTTPServer(tmp / f"git-{n}") as server:
        url = template(server, tmp / f"work-{n}", name)
        env = {"PROJECTGEN_POLICY_FILE": str(POLICY), "PROJECTGEN_TEMPLATE_MIN_INTERVAL": "1s"}
        operator = Operator(cp, ns, tmp, 4, f"fleet-{n}", env=env)
        operator.start()
        try:
            create_all(cp, ns, [follower(f"p{i:04d}", url, interval, "fleet") for i in range(n)])
            rendered = wait_all(cp, ns, n, "v1.0.0", timeout=max(600, 3 * n))
            quiet(cp, time.monotonic() + 120)
            before, since = metrics(cp), time.time()
            time.sleep(k * every)  # a benchmark: the window is K intervals of wall clock
            steady = operator_requests(metrics(cp) - before)
            row: dict[str, Any] = {
                "n": n,
                "render_s": rendered,
                "api_per_interval": sum(steady.values()) / k,
                "listings_per_interval": listings(server, name, since) / k,
                "breakdown": breakdown(steady),
                "rss_mb": operator.rss(),
                "load": load(),
            }
            if move:
                before, since = metrics(cp), time.time()
                release(server, tmp / f"work-{n}", name, "v1.1.0")
                row["move_s"] = wait_all(cp, ns, n, "v1.1.0", timeout=max(600, 3 * n))
                quiet(cp, time.monotonic() + 120)
                moved = operator_requests(metrics(cp) - before)
                row["move_api_per_project"] = sum(moved.values()) / n
                row["move_git_sessions"] = listings(server, name, since)  # the listing and N clones
                row["move_breakdown"] = breakdown(moved)
        finally:
            operator.stop()
    return row


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="100,1000")
    parser.add_argument("--interval", default="10s", help="updateInterval of every project")
    parser.add_argument("--intervals", type=int, default=5, help="steady-state intervals counted")
    parser.add_argument("--move", default="100", help="sizes at which a new tag is pushed and timed")
    args = parser.parse_args()
    moves = {int(s) for s in args.move.split(",") if s}
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory(prefix="projectgen-bench-fleet-") as tmp, ControlPlane() as cp:
        cp.install(REPO / "crds")
        for n in (int(s) for s in args.sizes.split(",")):
            row = run(cp, Path(tmp), n, args.interval, args.intervals, n in moves)
            print(f"N={n}: {row}", file=sys.stderr, flush=True)
            rows.append(row)
    print(
        f"\nFleet checks: N projects following one template, updateInterval {args.interval}, "
        f"{args.intervals} intervals counted ({os.cpu_count()} cores)\n"
    )
    head = (
        f"{'N':>5} {'API req/interval':>16} {'listings/interval':>17} {'first render s':>14} "
        f"{'new tag -> all moved s':>22} {'API req/project (move)':>22} {'RSS MB':>7}  load"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        move = f"{r['move_s']:.1f}" if "move_s" in r else "-"
        per = f"{r['move_api_per_project']:.2f}" if "move_api_per_project" in r else "-"
        print(
            f"{r['n']:>5} {r['api_per_interval']:>16.1f} {r['listings_per_interval']:>17.1f} {r['render_s']:>14.1f} "
            f"{move:>22} {per:>22} {r['rss_mb']:>7.0f}  {r['load']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
