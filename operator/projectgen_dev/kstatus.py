"""kstatus, as GitOps tools compute it: what Argo CD, Flux and kpt think of an object's status.

`compute(objects)` runs a tiny Go helper (`hack/kstatus/`, on `sigs.k8s.io/cli-utils/pkg/kstatus/status`)
and returns one status per object: `Current`, `InProgress`, `Failed`, `Terminating`, `NotFound` or
`Unknown`. The helper is built once from the Go module proxy into
``${XDG_CACHE_HOME:-~/.cache}/projectgen/bin/kstatus-<version>/`` (a minute or two the first time,
progress on stderr; a file lock serialises concurrent builders), like the control plane's binaries.

Tests only: the operator never runs it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from projectgen_dev import buildcache

CLI_UTILS_VERSION = "v0.37.2"
"""The sigs.k8s.io/cli-utils version pinned in hack/kstatus/go.mod."""

SOURCE_FILES = ("go.mod", "go.sum", "main.go")
BUILD_TIMEOUT = 900.0


class KstatusUnavailable(RuntimeError):
    """The helper could not be found nor built."""


@dataclass(frozen=True)
class Result:
    status: str
    message: str


def _log(message: str) -> None:
    print(f"[kstatus] {message}", file=sys.stderr, flush=True)


def source_dir() -> Path | None:
    """``hack/kstatus`` of the source checkout; None when not installed from one."""
    directory = Path(__file__).resolve().parents[2] / "hack" / "kstatus"
    return directory if all((directory / f).is_file() for f in SOURCE_FILES) else None


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "projectgen" / "bin" / f"kstatus-{CLI_UTILS_VERSION}"


def _source_digest(source: Path) -> str:
    digest = hashlib.sha256()
    for name in SOURCE_FILES:
        digest.update(name.encode() + b"\0" + (source / name).read_bytes() + b"\0")
    return digest.hexdigest()


def _built(target: Path, digest: str) -> bool:
    try:
        stamp = (target / "SOURCE").read_text().strip()
    except OSError:
        return False
    binary = target / "kstatus"
    return stamp == digest and binary.is_file() and os.access(binary, os.X_OK)


def ensure_binary() -> Path:
    """The helper's path: ``$PROJECTGEN_KSTATUS`` if set, else the cache, built there when missing
    or when ``hack/kstatus`` changed since. Raises KstatusUnavailable when that fails."""
    given = os.environ.get("PROJECTGEN_KSTATUS")
    if given:
        path = Path(given).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise KstatusUnavailable(f"PROJECTGEN_KSTATUS={given} is not an executable file")
        return path
    source = source_dir()
    target = cache_dir()
    if source is None:
        if (target / "kstatus").is_file():
            return target / "kstatus"
        raise KstatusUnavailable(
            f"no kstatus helper in {target} and hack/kstatus/ is only available in a source checkout"
        )
    digest = _source_digest(source)
    if _built(target, digest):
        return target / "kstatus"
    go = shutil.which("go")
    if go is None:
        raise KstatusUnavailable(f"`go` is not on PATH to build the kstatus helper into {target}")
    target.mkdir(parents=True, exist_ok=True)
    buildcache.build_once(
        target.parent / f".{target.name}.lock",
        lambda: _built(target, digest),
        lambda: _build(go, source, target, digest),
        what=f"the kstatus helper (sigs.k8s.io/cli-utils {CLI_UTILS_VERSION}) into {target}",
        error=KstatusUnavailable,
        log=_log,
    )
    return target / "kstatus"


def _build(go: str, source: Path, target: Path, digest: str) -> None:
    (target / "SOURCE").unlink(missing_ok=True)
    tmp = target / "kstatus.tmp"
    env = {
        **os.environ,
        "GOTOOLCHAIN": os.environ.get("GOTOOLCHAIN", "local"),
        "CGO_ENABLED": "0",
        # go.sum is checked in: never rewrite the source tree.
        "GOFLAGS": "-mod=readonly -buildvcs=false",
    }
    try:
        proc = subprocess.run(
            [go, "build", "-trimpath", "-ldflags=-s -w", "-o", str(tmp), "."],
            cwd=source,
            env=env,
            stdout=sys.stderr,  # progress only, never on our stdout
            stderr=sys.stderr,
            check=False,
            timeout=BUILD_TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        raise KstatusUnavailable(f"`go build` of {source} did not finish in {BUILD_TIMEOUT:.0f}s") from exc
    if proc.returncode != 0 or not tmp.is_file():
        raise KstatusUnavailable(
            f"`go build` of {source} failed with exit code {proc.returncode} (see above)"
        )
    tmp.replace(target / "kstatus")
    (target / "SOURCE").write_text(digest + "\n")


def results(objects: Iterable[Mapping[str, Any]]) -> list[Result]:
    """kstatus' status and message of each object (dicts as the API server returns them)."""
    objs = [dict(o) for o in objects]
    if not objs:
        return []
    proc = subprocess.run(
        [str(ensure_binary())],
        input=json.dumps(objs),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"kstatus helper failed ({proc.returncode}): {proc.stderr.strip()}")
    out = [Result(**json.loads(line)) for line in proc.stdout.splitlines() if line.strip()]
    if len(out) != len(objs):
        raise RuntimeError(f"kstatus helper answered {len(out)} results for {len(objs)} objects")
    return out


def compute(objects: Iterable[Mapping[str, Any]]) -> list[str]:
    """kstatus' status of each object: `Current`, `InProgress`, `Failed`, ..."""
    return [r.status for r in results(objects)]


def main() -> int:
    """`python -m projectgen_dev.kstatus < objects.json` (an object, an array or a List)."""
    data = json.loads(sys.stdin.read())
    objs = data if isinstance(data, list) else data.get("items", []) if data.get("kind") == "List" else [data]
    for r in results(objs):
        print(f"{r.status}\t{r.message}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
