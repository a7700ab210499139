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
import os
import shutil
import subprocess
import sys
from pathlib import Path

from projectgen_dev import buildcache

PROMETHEUS_VERSION = "3.16.0"
"""The Prometheus release the rules and the dashboard are written for (README "Monitoring")."""
MODULE_VERSION = "v0.316.0"
"""Its Go module version."""
BIN_ENV = "PROJECTGEN_PROMTOOL"


class PromtoolError(RuntimeError):
    """promtool could not be found nor built."""


def _log(message: str) -> None:
    print(f"[promtool] {message}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "projectgen" / "bin" / "promtool" / f"v{PROMETHEUS_VERSION}"


def build_script() -> Path | None:
    script = Path(__file__).resolve().parents[2] / "hack" / "build-promtool.sh"
    return script if script.is_file() else None


def _cache_complete(directory: Path) -> bool:
    try:
        stamp = (directory / "VERSION").read_text()
    except OSError:
        return False
    binary = directory / "promtool"
    return (
        binary.is_file()
        and os.access(binary, os.X_OK)
        and stamp == f"promtool {PROMETHEUS_VERSION} {MODULE_VERSION}\n"
    )


def find_promtool() -> Path:
    """The promtool binary: the override, else the cache (built into when missing)."""
    override = os.environ.get(BIN_ENV)
    if override:
        path = Path(override).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise PromtoolError(f"{BIN_ENV}={override} is not an executable file")
        return path
    target = cache_dir()
    if _cache_complete(target):
        return target / "promtool"
    script = build_script()
    if script is None:
        raise PromtoolError(f"promtool not found (set {BIN_ENV}); {target} is empty")
    if shutil.which("go") is None:
        raise PromtoolError(f"promtool not found and `go` is not on PATH to build it into {target}")
    buildcache.build_once(
        target.parent / f".{target.name}.lock",
        lambda: _cache_complete(target),
        ["bash", str(script), str(target), MODULE_VERSION],
        what=f"promtool {PROMETHEUS_VERSION} into {target}",
        error=PromtoolError,
        log=_log,
    )
    return target / "promtool"


def run(*args: str, stdin: bytes | None = None, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """promtool with `args`; never raises on its exit code (the caller reads it and the output)."""
    proc = subprocess.run(
        [str(find_promtool()), *args],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return proc


def main(argv: list[str] | None = None) -> int:
    """`python -m projectgen_dev.promtool --ensure`: find or build the binary, print where."""
    parser = argparse.ArgumentParser(prog="python -m projectgen_dev.promtool", description=main.__doc__)
    parser.add_argument("--ensure", action="store_true", required=True, help="find or build the binary")
    parser.parse_args(argv)
    try:
        _log(f"binary: {find_promtool()}")
    except PromtoolError as exc:
        _log(str(exc))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
