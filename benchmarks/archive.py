"""Archive exports against their peers: GNU tar, gzip, pigz and Info-ZIP zip.

    .venv/bin/python benchmarks/archive.py [--quick] [--runs N] [--dir BASE]

Builds two trees in a fresh directory under BASE (default /tmp), deleted at the end: 20,000
code-like text files of 1-8 KiB (about 90 MB), and 20 files of 25 MiB of mixed content (code-like
text with a block of random bytes in every 8). On the same data, in the same run, interleaved,
it times projectgen's `write_archive` (the operator's code, fed from manifest.json, so every
file's size and SHA-256 is checked, and the archive fsync-ed before it is renamed into place) and
the peers, which neither check nor fsync. Each run is a child process:

- `min s`, `med s`: wall time of the whole child: for projectgen, Python start-up and loading
  the manifest included (what `projectgen archive --manifest` costs);
- `fn s`: for projectgen, the time inside `write_archive` alone (what the operator pays);
- `RSS MB`: the child's peak RSS, from GNU time's %M.

Goals, PASS/MISS per tree, judged on `fn s` and, in brackets, on the whole process (`tar cf +
fsync` is there to show what the fsync that projectgen does and tar does not costs):
- tar.gz no slower than `tar cf - | pigz -6`, at a ratio within 5% of gzip -6 (`tar czf`);
- zip no slower than `zip -qr`, at a ratio within 5% of it;
- plain tar at most 1.5x `tar cf` on small files, no slower on large ones;
- peak RSS under 100 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    MiB,
    Row,
    Tree,
    make_large_tree,
    make_small_tree,
    measure_child,
    print_table,
    remove_tree,
)


@dataclass
class Tool:
    name: str
    argv: list[str] | None
    """None: skipped (see `missing`)."""
    output: Path
    pipeline: bool = False
    peer: str | None = None
    missing: str = ""


def run_one(fmt: str, manifest: Path, root: Path, target: Path) -> None:
    """The child for a projectgen row: load the manifest, time write_archive, print the seconds."""
    from projectgen.export.archive import ArchiveMember, write_archive
    from projectgen.generation.manifest import Manifest

    members = [ArchiveMember.from_project_file(f) for f in Manifest.load(manifest).files]
    start = time.perf_counter()
    write_archive(root, members, fmt, target, prefix=root.name)  # type: ignore[arg-type]
    print(json.dumps({"seconds": time.perf_counter() - start}))


def tools(tree: Tree, out: Path) -> list[Tool]:
    name = tree.root.name
    me = [sys.executable, str(Path(__file__).resolve()), "--run-one"]

    def projectgen(fmt: str, peer: str) -> Tool:
        target = out / f"projectgen.{fmt}"
        return Tool(
            f"projectgen {fmt}",
            [*me, fmt, str(tree.manifest), str(tree.root), str(target)],
            target,
            peer=peer,
        )

    pigz_out = out / "pigz.tar.gz"
    synced = out / "gnu-synced.tar"
    result = [
        projectgen("tar", "GNU tar cf"),
        Tool("GNU tar cf", ["tar", "cf", str(out / "gnu.tar"), name], out / "gnu.tar"),
        Tool(
            "tar cf + fsync",
            [f"tar cf {shlex.quote(str(synced))} {shlex.quote(name)} && sync {shlex.quote(str(synced))}"],
            synced,
            pipeline=True,
        ),
        projectgen("tar.gz", "tar cf | pigz -6"),
        Tool(
            "tar cf | pigz -6",
            [f"tar cf - {shlex.quote(name)} | pigz -6 > {shlex.quote(str(pigz_out))}"],
            pigz_out,
            pipeline=True,
        ),
        Tool("tar czf (gzip -6)", ["tar", "czf", str(out / "gzip.tar.gz"), name], out / "gzip.tar.gz"),
        projectgen("zip", "zip -qr"),
        Tool("zip -qr", ["zip", "-qr", str(out / "info.zip"), name], out / "info.zip"),
    ]
    needs = {
        "GNU tar cf": ["tar"],
        "tar cf + fsync": ["tar", "sync"],
        "tar cf | pigz -6": ["tar", "pigz"],
        "tar czf (gzip -6)": ["tar", "gzip"],
        "zip -qr": ["zip"],
    }
    for tool in result:
        missing = [t for t in needs.get(tool.name, []) if shutil.which(t) is None]
        if missing:
            tool.argv = None
            tool.missing = f"{', '.join(missing)} not installed (apt-get install -y {' '.join(missing)})"
    return result


def bench_tree(title: str, tree: Tree, out: Path, runs: int) -> list[Row]:
    ts = tools(tree, out)
    rows = {t.name: Row(t.name, in_bytes=tree.size, peer=t.peer, note=t.missing) for t in ts}
    for _ in range(runs):
        # Interleaved, so that a noisy moment of the machine hurts every tool alike.
        for t in ts:
            if t.argv is None:
                continue
            t.output.unlink(missing_ok=True)
            seconds, rss, stdout = measure_child(t.argv, pipeline=t.pipeline, cwd=tree.root.parent)
            row = rows[t.name]
            row.runs.append(seconds)
            if stdout.strip().startswith("{"):
                row.inner.append(json.loads(stdout)["seconds"])
            row.rss_mb = max(row.rss_mb, rss)
            row.out_bytes = t.output.stat().st_size
            t.output.unlink()
    result = list(rows.values())
    print_table(f"{title}: {tree.files} files, {tree.size / 1e6:.0f} MB, {runs} run(s) each", result)
    return result


Check = tuple[str, "bool | None", str]


def goals(title: str, rows: list[Row], *, small: bool) -> list[Check]:
    by = {r.tool: r for r in rows if r.runs}

    def fn(row: Row) -> float:
        return min(row.inner) if row.inner else row.best

    def speed(name: str, mine: str, peer: str, limit: float) -> Check:
        if mine not in by or peer not in by:
            return (name, None, f"{peer} missing")
        a, b = by[mine], by[peer]
        passed = fn(a) <= b.best * limit
        whole = "PASS" if a.best <= b.best * limit else "MISS"
        return (
            name,
            passed,
            f"{fn(a):.2f}s vs {b.best:.2f}s = {fn(a) / b.best:.2f}x [whole process {a.best / b.best:.2f}x: {whole}]",
        )

    def ratio(name: str, mine: str, peer: str) -> Check:
        if mine not in by or peer not in by:
            return (name, None, f"{peer} missing")
        a, b = by[mine], by[peer]
        return (
            name,
            a.ratio <= b.ratio * 1.05,
            f"{a.ratio:.4f} vs {b.ratio:.4f} ({a.ratio / b.ratio - 1:+.1%})",
        )

    limit = 1.5 if small else 1.0
    checks = [
        speed("tar.gz no slower than pigz -6", "projectgen tar.gz", "tar cf | pigz -6", 1.0),
        ratio("tar.gz ratio within 5% of gzip -6", "projectgen tar.gz", "tar czf (gzip -6)"),
        speed("zip no slower than zip -r", "projectgen zip", "zip -qr", 1.0),
        ratio("zip ratio within 5% of zip -r", "projectgen zip", "zip -qr"),
        speed(f"tar at most {limit}x tar cf", "projectgen tar", "GNU tar cf", limit),
    ]
    if "projectgen tar" in by and "tar cf + fsync" in by:
        a, b = by["projectgen tar"], by["tar cf + fsync"]
        checks.append(
            (
                f"(like for like) tar at most {limit}x tar cf + fsync",
                fn(a) <= b.best * limit,
                f"{fn(a) / b.best:.2f}x",
            )
        )
    worst = max((r.rss_mb for r in rows if r.tool.startswith("projectgen") and r.runs), default=0.0)
    checks.append(("peak RSS < 100 MB", worst < 100, f"{worst:.0f} MB"))
    print(f"\nGoals, {title}:")
    for name, passed, detail in checks:
        verdict = "SKIP" if passed is None else "PASS" if passed else "MISS"
        print(f"  {verdict}  {name:<50} {detail}")
    return checks


def versions() -> str:
    def first_line(argv: list[str], containing: str = "") -> str:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, check=False)
        except OSError:
            return f"{argv[0]} missing"
        lines = [line.strip() for line in (out.stdout + out.stderr).splitlines() if containing in line]
        return lines[0] if lines else "?"

    import zlib_ng

    parts = [
        f"python {platform.python_version()}",
        f"python-zlib-ng {getattr(zlib_ng, '__version__', '?')}",
        first_line(["tar", "--version"]),
        first_line(["pigz", "--version"]),
        first_line(["gzip", "--version"]),
        first_line(["zip", "-v"], "This is Zip"),
    ]
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Time projectgen's archives against tar, pigz, gzip and zip."
    )
    parser.add_argument("--quick", action="store_true", help="1 run each, smaller trees (a smoke test)")
    parser.add_argument("--runs", type=int, help="runs per tool (default 3, --quick 1)")
    parser.add_argument(
        "--dir", type=Path, default=Path("/tmp"), help="where to make the fresh work directory"
    )
    parser.add_argument(
        "--run-one", nargs=4, metavar=("FMT", "MANIFEST", "ROOT", "OUT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.run_one:
        fmt, manifest, root, target = args.run_one
        run_one(fmt, Path(manifest), Path(root), Path(target))
        return 0
    runs = args.runs or (1 if args.quick else 3)

    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    print(versions())
    base = Path(tempfile.mkdtemp(prefix="projectgen-bench-archive-", dir=args.dir))
    results: list[Check] = []
    try:
        out = base / "out"
        out.mkdir()
        t0 = time.perf_counter()
        small = make_small_tree(base, files=2_000 if args.quick else 20_000)
        print(f"small tree made in {time.perf_counter() - t0:.1f}s")
        rows = bench_tree("Small files", small, out, runs)
        results += goals("small files", rows, small=True)
        remove_tree(small.root.parent)

        t0 = time.perf_counter()
        large = make_large_tree(
            base, files=4 if args.quick else 20, file_size=(8 if args.quick else 25) * MiB
        )
        print(f"\nlarge tree made in {time.perf_counter() - t0:.1f}s")
        rows = bench_tree("Large files", large, out, runs)
        results += goals("large files", rows, small=False)
    finally:
        remove_tree(base)
    print(f"\nload average {os.getloadavg()[0]:.2f} at end")
    missed = [name for name, passed, _ in results if passed is False]
    print("all goals met" if not missed else f"missed: {'; '.join(missed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
