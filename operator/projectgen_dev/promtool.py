"""promtool, Prometheus' own checker: `check rules`, `test rules` and `check metrics` in the tests.

The alert rules in ``manifests/monitoring/`` are written for Prometheus ``PROMETHEUS_VERSION``; the
tests check and unit-test them with promtool of that same release. The binary is looked up with
:func:`find_promtool`: ``$PROJECTGEN_PROMTOOL`` (a path), then
``${XDG_CACHE_HOME:-~/.cache}/projectgen/bin/promtool/v<release>/``, built there by
``hack/build-promtool.sh`` from the Go module proxy when missing (a file lock serialises concurrent
builders; minutes the first time). Not a promtool on PATH: another release may parse rules
differently from the one the rules are written for.

Prometheus 3.x is published as the Go module ``github.com/prometheus/prometheus v0.3MM.P`` for
release ``3.MM.P``; the build script checks the module's own VERSION file says so.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from projectgen_dev import buildcache
from projectgen_dev.ci import unavailable

PROMETHEUS_VERSION = "3.16.0"
"""The Prometheus release the rules and the dashboard are written for (README "Monitoring")."""
MODULE_VERSION = "v0.316.0"
"""Its Go module version."""
BIN_ENV = "PROJECTGEN_PROMTOOL"
PROMETHEUS_OPERATOR_VERSION = "v0.85.0"
"""The Prometheus Operator whose CRDs (ServiceMonitor, PrometheusRule) the monitoring manifests are
checked against on the test control plane."""


class PromtoolError(RuntimeError):
    """promtool could not be found nor built."""


def _log(message: str) -> None:
    print(f"[promtool] {message}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    return buildcache.cache_dir("promtool", f"v{PROMETHEUS_VERSION}")


def build_script() -> Path | None:
    return buildcache.build_script("build-promtool.sh")


def find_promtool() -> Path:
    """The promtool binary: the override, else the cache (built into when missing)."""
    return buildcache.find_or_build(
        override_env=BIN_ENV,
        target=cache_dir(),
        binary="promtool",
        stamp=f"promtool {PROMETHEUS_VERSION} {MODULE_VERSION}\n",
        script="build-promtool.sh",
        version=MODULE_VERSION,
        what=f"promtool {PROMETHEUS_VERSION} into {cache_dir()}",
        error=PromtoolError,
        log=_log,
    )


def for_tests() -> Path:
    """find_promtool() for a test: skipped on a developer's machine without it, failed in CI."""
    try:
        return find_promtool()
    except PromtoolError as exc:
        unavailable(f"promtool unavailable: {exc}")


def run(
    binary: Path, *args: str, stdin: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """promtool with `args`; never raises on its exit code (the caller reads it and the output)."""
    return subprocess.run(
        [str(binary), *args], input=stdin, cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )


def prometheus_operator_crds(*plurals: str) -> list[Path]:
    """The Prometheus Operator's CRD files (``monitoring.coreos.com_<plural>.yaml``) from its Go
    module, `go mod download`-ed into the module cache (read-only there; nothing in the repo)."""
    if shutil.which("go") is None:
        raise PromtoolError("`go` is not on PATH to download the Prometheus Operator's CRDs")
    module = f"github.com/prometheus-operator/prometheus-operator@{PROMETHEUS_OPERATOR_VERSION}"
    with tempfile.TemporaryDirectory(prefix="projectgen-promop-") as scratch:
        env = {**os.environ, "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": os.environ.get("GOTOOLCHAIN", "local")}
        subprocess.run(
            ["go", "mod", "init", "projectgen.local/promop"],
            cwd=scratch,
            env=env,
            capture_output=True,
            check=False,
        )
        done = subprocess.run(
            ["go", "mod", "download", "-json", module],
            cwd=scratch,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
    try:
        directory = Path(json.loads(done.stdout)["Dir"]) / "example" / "prometheus-operator-crd"
    except (ValueError, KeyError):
        raise PromtoolError(
            f"go mod download {module} failed: {(done.stdout + done.stderr)[-1000:]}"
        ) from None
    files = [directory / f"monitoring.coreos.com_{plural}.yaml" for plural in plurals]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise PromtoolError(f"{module} has no {', '.join(missing)}")
    return files


def main(argv: list[str] | None = None) -> int:
    """`python -m projectgen_dev.promtool --ensure`: find or build the binary (and fetch the
    Prometheus Operator's CRDs), print where."""
    parser = argparse.ArgumentParser(prog="python -m projectgen_dev.promtool", description=main.__doc__)
    parser.add_argument("--ensure", action="store_true", required=True, help="find or build the binary")
    parser.parse_args(argv)
    try:
        _log(f"binary: {find_promtool()}")
        # and the Prometheus Operator's CRDs the monitoring manifests are admitted under, fetched now
        # into the module cache rather than mid-test
        _log(f"CRDs: {prometheus_operator_crds('servicemonitors', 'prometheusrules')[0].parent}")
    except PromtoolError as exc:
        _log(str(exc))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
