"""Renders that run programs (issue 25) against copier rendering the same templates in-process.

    .venv/bin/python benchmarks/render_programs.py [--runs N]

Two one-file templates from ConfigMaps, each rendered N times by `render_project` (the sandboxed
child, as the operator renders) and by copier's Worker in this process (imports already paid):
- `plain`: no program (what every render pays: the confinement with its exec allowlist);
- `git identity`: the copier-uv pattern, an extension calling `git config user.name` and
  `git config user.email`, and a filter piping text through `tr` (three programs).
Prints the median and min of each, and what the sandbox adds to the median.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "unit"))


def templates() -> dict[str, dict[str, str]]:
    from test_sandbox_programs import GIT_IDENTITY

    return {
        "plain": {"copier.yml": "name:\n  default: x\n", "a.txt.jinja": "{{ name }}\n"},
        "git identity": {k: v for k, v in GIT_IDENTITY.items() if "answers_file" not in k},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args(argv)
    from copier._main import Worker

    from projectgen.api.v1alpha1.generatedproject import GeneratedProjectSpec
    from projectgen.generation.render import ConfigMapData, render_project

    base = Path(tempfile.mkdtemp(prefix="render-programs-"))
    rows = []
    for label, files in templates().items():
        keys = {f"k{i}": path for i, path in enumerate(files)}
        cm = ConfigMapData(data={k: files[p] for k, p in keys.items()}, binary_data={})
        items = [{"key": k, "path": p} for k, p in keys.items()]
        spec = GeneratedProjectSpec.model_validate(
            {
                "projectRef": {"name": "p"},
                "sources": [{"template": {"configMap": {"name": "t", "items": items}}}],
            }
        )
        local = base / label.replace(" ", "-")
        for path, text in files.items():
            (local / "tpl" / path).parent.mkdir(parents=True, exist_ok=True)
            (local / "tpl" / path).write_text(text)
        sandboxed: list[float] = []
        inprocess: list[float] = []
        for i in range(args.runs + 1):
            start = time.perf_counter()
            try:
                render_project(spec, local / f"s{i}", configmaps={"t": cm}.get)
            except Exception as exc:  # e.g. the code before programs were allowed
                print(f"{label}: the sandboxed render failed: {exc}")
                break
            took = time.perf_counter() - start
            start = time.perf_counter()
            with Worker(
                src_path=str(local / "tpl"), dst_path=local / f"c{i}", defaults=True, quiet=True, unsafe=True
            ) as worker:
                worker.run_copy()
            if i:  # the first round warms the render server and the caches
                sandboxed.append(took)
                inprocess.append(time.perf_counter() - start)
        rows.append((label, sandboxed, inprocess))
    print(
        f"{'template':<14} {'sandboxed med/min ms':>22} {'copier in-process med/min ms':>30} {'added ms':>9}"
    )
    for label, sandboxed, inprocess in rows:
        if not sandboxed:
            continue
        added = statistics.median(sandboxed) - statistics.median(inprocess)
        print(
            f"{label:<14} {statistics.median(sandboxed) * 1000:>12.0f} / {min(sandboxed) * 1000:<7.0f} "
            f"{statistics.median(inprocess) * 1000:>20.0f} / {min(inprocess) * 1000:<7.0f} {added * 1000:>+9.0f}"
        )
    print(f"(runs {args.runs}, load average {os.getloadavg()[0]:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
