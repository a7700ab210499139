"""The reliability suite: crashes, API server and host faults, hostile input, isolation, secrets.

It lives under `tests/integration/` so it shares that directory's fixtures (one control plane
and one session operator per run; `pytest_plugins` cannot be declared outside the rootdir's
conftest). Its tests start operators of their own in `solo-*` namespaces, each with its own
data directory, so they can kill them and inspect every file they wrote.

Knobs (environment):
- `PROJECTGEN_CHAOS_SEED`: seed of the crash harness (printed; default: random).
- `PROJECTGEN_CHAOS_KILLS`: SIGKILLs of the crash harness that land in work (default 30, about 3 minutes).
- `PROJECTGEN_RELIABILITY_FULL=1`: the heavy variants: a 1 GiB zip bomb instead of 256 MiB, and
  a GitHub stand-in slower than the client's 30 s timeout.

At the end of the session a table sums up what ran (from `projectgen-reliability-summary.json`
in pytest's base temp directory, written by the tests as they go).
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest
from relsupport import SUMMARY_FILE, Stats
from support import OperatorProcess

from projectgen_dev.controlplane import ControlPlane

HERE = Path(__file__).parent
SUMMARY_KEY = pytest.StashKey[Path]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "reliability: crash, fault and hostile-input suite (tests/integration/reliability)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.reliability)


@pytest.fixture(scope="session")
def stats(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Stats:
    path = tmp_path_factory.getbasetemp() / SUMMARY_FILE
    request.config.stash[SUMMARY_KEY] = path
    return Stats(path)


class Operators:
    """Operators of one test, each `projectgen run` in a subprocess with its own log and a temp
    directory of its own (`TMPDIR`, checked for leftovers); all are killed at teardown."""

    def __init__(self, control_plane: ControlPlane, tmp_path: Path) -> None:
        self.kubeconfig = control_plane.kubeconfig
        self.tmp_path = tmp_path
        self.started: list[OperatorProcess] = []

    def new(
        self,
        namespaces: tuple[str, ...],
        data_dir: Path,
        *,
        name: str = "operator",
        env: dict[str, str] | None = None,
        kubeconfig: Path | None = None,
    ) -> OperatorProcess:
        tmp = self.tmp_path / f"{name}-tmp"
        tmp.mkdir(exist_ok=True)
        proc = OperatorProcess(
            kubeconfig or self.kubeconfig,
            data_dir,
            self.tmp_path / f"{name}.log",
            namespaces=namespaces,
            env={"TMPDIR": str(tmp), "PROJECTGEN_LOG_FORMAT": "plain", **(env or {})},
        )
        self.started.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.started:
            proc.kill()


@pytest.fixture
def operators(control_plane: ControlPlane, tmp_path: Path) -> Iterator[Operators]:
    ops = Operators(control_plane, tmp_path)
    try:
        yield ops
    finally:
        ops.stop_all()


@pytest.fixture
def make_solo_namespace(request: pytest.FixtureRequest, api_client: kubernetes.client.ApiClient) -> Any:
    """`make_solo_namespace(suffix)`: fresh namespaces the session operator ignores (`solo-*`)."""

    def make(suffix: str) -> str:
        base = re.sub(r"[^a-z0-9]+", "-", f"{request.node.name}-{suffix}".lower()).strip("-")
        name = f"solo-{base[:48].rstrip('-')}-{secrets.token_hex(3)}"
        kubernetes.client.CoreV1Api(api_client).create_namespace(
            kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name=name))
        )
        return name

    return make


def _rows(data: dict[str, Any]) -> list[tuple[str, str]]:
    crash, api, hosts = data.get("crash", {}), data.get("apiserver", {}), data.get("hosts", {})
    corpus, leaks, iso = data.get("corpus", {}), data.get("leaks", {}), data.get("isolation", {})
    bulk = data.get("bulk", {})
    points = ", ".join(
        f"{k.removeprefix('at_')} {v}" for k, v in sorted(crash.items()) if k.startswith("at_")
    )
    rows = [
        (
            "kill points survived",
            f"{crash.get('kills', 0)} SIGKILLs ({points or 'none'}); "
            f"{crash.get('rounds_verified', 0)} rounds verified; seed {crash.get('seed', '-')}",
        ),
        (
            "API restarts survived",
            f"{api.get('apiserver_restarts', 0)} kube-apiserver, {api.get('etcd_restarts', 0)} etcd "
            f"({api.get('crash_stops', 0)} of them SIGKILL)",
        ),
        (
            "status checks while breaking",
            f"{crash.get('watch_checks', 0) + api.get('watch_checks', 0)} Completed statuses checked, "
            f"{crash.get('violations', 0) + api.get('violations', 0)} inconsistent",
        ),
        (
            "host faults",
            f"{hosts.get('scenarios', 0)} scenarios: {hosts.get('completed', 0)} completed after retries, "
            f"{hosts.get('failed', 0)} failed permanently, {hosts.get('retrying', 0)} still retrying (reported)",
        ),
        (
            "inputs tried / refused / accepted",
            f"{corpus.get('tried', 0)} / {corpus.get('rejected', 0) + corpus.get('failed', 0)} "
            f"({corpus.get('rejected', 0)} by the API server, {corpus.get('failed', 0)} Failed) / "
            f"{corpus.get('completed', 0)} ({corpus.get('warned', 0)} with a warning); "
            f"{corpus.get('pending', 0)} pending, {corpus.get('mismatches', 0)} not as expected",
        ),
        (
            "isolation checks",
            f"{iso.get('checks', 0)} checks, {iso.get('violations', 0)} violations",
        ),
        (
            "leaks found",
            f"{leaks.get('found', 0)} in {leaks.get('scans', 0)} scans "
            f"({leaks.get('failure_modes', 0)} failure modes)",
        ),
    ]
    if bulk:
        rows.append(
            (
                "bulk",
                "; ".join(f"{k.replace('_', ' ')} {v}" for k, v in sorted(bulk.items()) if k != "notes"),
            )
        )
    for section, values in sorted(data.items()):
        for note in values.get("notes", []) if isinstance(values, dict) else []:
            rows.append((f"note ({section})", str(note)))
    return rows


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    path = config.stash.get(SUMMARY_KEY, None)
    if path is None or not path.is_file():
        return
    try:
        data = json.loads(path.read_text())
    except ValueError:
        return
    rows = _rows(data)
    width = max(len(k) for k, _ in rows)
    terminalreporter.section("projectgen reliability summary")
    for key, value in rows:
        terminalreporter.write_line(f"{key.ljust(width)}  {value}")
    terminalreporter.write_line(f"{'(numbers from)'.ljust(width)}  {path}")
