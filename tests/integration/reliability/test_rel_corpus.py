"""The hostile input corpus (tests/corpus/*.yaml) against the real API server and a real operator.

All cases are created at once in one `solo-*` namespace served by an operator of this module
(its own data directory, so every file it writes can be accounted for); templates from git come
from a local smart-HTTP server. One test per case checks its outcome: refused by the API server
with a message, Failed or Pending with a message, or Completed (with or without a warning Event)
with exactly the expected files; then each export the case asks for. A last test checks that no
case wrote anything outside its own directory of the volume.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest
import yaml
from kubernetes.client.exceptions import ApiException
from relsupport import Stats, archive_problems, debris, load_manifest, tree_problems
from support import EXPORTS, GROUP, PROJECTS, VERSION, OperatorProcess

from projectgen_dev.controlplane import ControlPlane
from projectgen_dev.gitserver import GitHTTPServer

CORPUS = Path(__file__).resolve().parents[2] / "corpus"
TIMEOUT = 240.0
GIT_ENV = {
    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
}


def resolve(value: Any) -> Any:
    """Expand `{$repeat: text, times: N, prefix: '', suffix: ''}` anywhere in a case."""
    if isinstance(value, dict):
        if "$repeat" in value:
            text = resolve(value["$repeat"]) * int(value["times"])
            return resolve(value.get("prefix", "")) + text + resolve(value.get("suffix", ""))
        return {k: resolve(v) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v) for v in value]
    return value


@dataclass
class Case:
    id: str
    file: str
    about: str
    sources: list[dict[str, Any]]
    expect: dict[str, Any]
    setup: dict[str, Any] = field(default_factory=dict)
    exports: list[dict[str, Any]] = field(default_factory=list)
    canaries: list[str] = field(default_factory=list)
    rejected_object: str = "GeneratedProject"

    def export_name(self, i: int) -> str:
        return f"{self.id}-x{i}"


def load_cases() -> list[Case]:
    cases: list[Case] = []
    names: dict[tuple[str, str], str] = {}
    for path in sorted(CORPUS.glob("*.yaml")):
        for raw in yaml.safe_load(path.read_text(encoding="utf-8"))["cases"]:
            case = Case(
                id=raw["id"],
                file=path.name,
                about=raw.get("about", ""),
                sources=resolve(raw["sources"]),
                expect=resolve(raw["expect"]),
                setup=raw.get("setup") or {},
                exports=resolve(raw.get("exports") or []),
                canaries=raw.get("canaries") or [],
                rejected_object=raw.get("rejectedObject", "GeneratedProject"),
            )
            for kind in ("configMaps", "gitTemplates"):
                for name in case.setup.get(kind) or {}:
                    assert (kind, name) not in names, (
                        f"{path.name}: {kind} {name} also in {names[(kind, name)]}"
                    )
                    names[(kind, name)] = case.id
            cases.append(case)
    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids)), "case ids must be unique"
    return cases


CASES = load_cases()


@dataclass
class Outcome:
    rejected: str | None = None
    obj: dict[str, Any] | None = None
    events: list[tuple[str, str, str]] = field(default_factory=list)
    exports: list[Outcome] = field(default_factory=list)


@dataclass
class Run:
    namespace: str
    data_dir: Path
    tmp_dir: Path
    operator: OperatorProcess
    outcomes: dict[str, Outcome]
    elapsed: float


def _git_template(server: GitHTTPServer, name: str, spec: dict[str, Any], work_root: Path) -> str:
    """A template as a real git repository (symlinks and hard links as git sees them)."""
    work = work_root / name
    work.mkdir(parents=True)
    encoding = spec.get("nameEncoding", "utf-8")
    for path, content in (spec.get("files") or {}).items():
        full = os.path.join(os.fsencode(work), path.encode(encoding))
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as fh:
            fh.write(str(content).encode())
    for path, target in (spec.get("symlinks") or {}).items():
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, work / path)
    outside = work_root / f"{name}-outside"
    outside.mkdir()
    for path, texts in (spec.get("hardlinks") or {}).items():
        (outside / path).write_text(texts["before"])
        os.link(outside / path, work / path)
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "template"], ["tag", "v1"]):
        subprocess.run(["git", *args], cwd=work, env=GIT_ENV, check=True, capture_output=True)
    for path, texts in (spec.get("hardlinks") or {}).items():
        with open(outside / path, "r+") as fh:  # same inode: the work tree's copy changes too
            fh.write(texts["after"])
            fh.truncate()
    bare = server.repo_path(f"templates/{name}")
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], env=GIT_ENV, check=True)
    return server.url(f"templates/{name}")


def _substitute(value: Any, urls: dict[str, str]) -> Any:
    if isinstance(value, str):
        for name, url in urls.items():
            value = value.replace(f"${{git:{name}}}", url)
        return value
    if isinstance(value, dict):
        return {k: _substitute(v, urls) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, urls) for v in value]
    return value


def _message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "").get("message"))
    except (ValueError, AttributeError):
        return str(exc.body or exc.reason)


def _done(obj: dict[str, Any] | None, expect: dict[str, Any]) -> bool:
    if obj is None:
        return False
    status = obj.get("status") or {}
    if status.get("observedGeneration") != obj["metadata"].get("generation"):
        return False
    phase = status.get("phase")
    if expect.get("phase") == "Pending":
        return phase in ("Pending", "Completed", "Failed")
    return phase in ("Completed", "Failed")


def _events(core: kubernetes.client.CoreV1Api, namespace: str) -> dict[str, list[tuple[str, str, str]]]:
    out: dict[str, list[tuple[str, str, str]]] = {}
    for e in core.list_namespaced_event(namespace).items:
        out.setdefault(e.involved_object.name, []).append((e.type or "", e.reason or "", e.message or ""))
    return out


def _wants_warning(expect: dict[str, Any]) -> bool:
    return bool(expect.get("warning")) and expect.get("phase") == "Completed"


@pytest.fixture(scope="module")
def corpus(
    api_client: kubernetes.client.ApiClient,
    control_plane: ControlPlane,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Run]:
    tmp = tmp_path_factory.mktemp("corpus")
    core = kubernetes.client.CoreV1Api(api_client)
    api = kubernetes.client.CustomObjectsApi(api_client)
    namespace = f"solo-corpus-{secrets.token_hex(3)}"
    core.create_namespace(
        kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name=namespace))
    )
    (tmp / "optmp").mkdir()
    operator = OperatorProcess(
        control_plane.kubeconfig,
        tmp / "data",
        tmp / "operator.log",
        namespaces=(namespace,),
        env={"TMPDIR": str(tmp / "optmp")},
    )
    outcomes = {case.id: Outcome() for case in CASES}
    started = time.monotonic()
    with GitHTTPServer(tmp / "git") as server, operator:
        urls = {}
        for case in CASES:
            for name, spec in (case.setup.get("gitTemplates") or {}).items():
                urls[name] = _git_template(server, name, spec, tmp / "work")
        pending: dict[str, Case] = {}
        for case in CASES:
            outcome = outcomes[case.id]
            try:
                for name, cm in (case.setup.get("configMaps") or {}).items():
                    body = kubernetes.client.V1ConfigMap(
                        metadata=kubernetes.client.V1ObjectMeta(name=name),
                        data=cm.get("data"),
                        binary_data=cm.get("binaryData"),
                    )
                    core.create_namespaced_config_map(namespace, body)
            except ApiException as exc:
                outcome.rejected = f"{case.rejected_object}: {_message(exc)}"
                continue
            body = {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "GeneratedProject",
                "metadata": {"name": case.id},
                "spec": {"projectRef": {"name": "corpus"}, "sources": _substitute(case.sources, urls)},
            }
            try:
                api.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, PROJECTS, body, field_validation="Strict"
                )
            except ApiException as exc:
                outcome.rejected = f"GeneratedProject: {_message(exc)}"
                continue
            pending[case.id] = case
        exporting: dict[str, tuple[Case, int]] = {}
        deadline = time.monotonic() + TIMEOUT
        while (pending or exporting) and time.monotonic() < deadline:
            objects = {
                o["metadata"]["name"]: o
                for o in api.list_namespaced_custom_object(GROUP, VERSION, namespace, PROJECTS)["items"]
            }
            exports = {
                o["metadata"]["name"]: o
                for o in api.list_namespaced_custom_object(GROUP, VERSION, namespace, EXPORTS)["items"]
            }
            events = (
                _events(core, namespace) if any(_wants_warning(c.expect) for c in pending.values()) else {}
            )
            for case_id, case in list(pending.items()):
                obj = objects.get(case_id)
                if not _done(obj, case.expect):
                    continue
                assert obj is not None
                phase = obj["status"]["phase"]
                if (
                    _wants_warning(case.expect)
                    and phase == "Completed"
                    and not any(t == "Warning" for t, _, _ in events.get(case_id, []))
                    and time.monotonic() < deadline - 30
                ):
                    continue  # the Event is posted a moment after the status
                outcomes[case_id].obj = obj
                del pending[case_id]
                if phase != "Completed":
                    continue
                for i, spec in enumerate(case.exports):
                    export = {"generatedProjectRef": {"name": case_id}, "exportType": spec["type"]}
                    if "repositoryName" in spec:
                        export["repositoryName"] = spec["repositoryName"]
                    body = {
                        "apiVersion": f"{GROUP}/{VERSION}",
                        "kind": "RepositoryExport",
                        "metadata": {"name": case.export_name(i)},
                        "spec": export,
                    }
                    sub = Outcome()
                    outcomes[case_id].exports.append(sub)
                    try:
                        api.create_namespaced_custom_object(
                            GROUP, VERSION, namespace, EXPORTS, body, field_validation="Strict"
                        )
                    except ApiException as exc:
                        sub.rejected = f"RepositoryExport: {_message(exc)}"
                        continue
                    exporting[case.export_name(i)] = (case, i)
            for name, (case, i) in list(exporting.items()):
                obj = exports.get(name)
                if obj is not None and _done(obj, {}):
                    outcomes[case.id].exports[i].obj = obj
                    del exporting[name]
            time.sleep(0.5)
        time.sleep(1.0)  # the last Events
        events = _events(core, namespace)
        for case in CASES:
            outcome = outcomes[case.id]
            outcome.events = events.get(case.id, [])
            for i, sub in enumerate(outcome.exports):
                sub.events = events.get(case.export_name(i), [])
        (tmp / "outcomes.json").write_text(
            json.dumps({k: _summary(v) for k, v in outcomes.items()}, indent=1)
        )
        run = Run(namespace, tmp / "data", tmp / "optmp", operator, outcomes, time.monotonic() - started)
        yield run


def _summary(outcome: Outcome) -> dict[str, Any]:
    """What happened, in a line or two (written to outcomes.json beside the operator's log)."""
    status = (outcome.obj or {}).get("status") or {}
    ready = next((c.get("message") for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    return {
        "rejected": outcome.rejected,
        "phase": status.get("phase"),
        "message": (status.get("errorMessage") or ready or "")[:300],
        "warnings": [m[:300] for t, _, m in outcome.events if t == "Warning"],
        "exports": [_summary(x) for x in outcome.exports],
    }


def _check(outcome: Outcome, expect: dict[str, Any], what: str) -> list[str]:
    """Differences between an outcome and what the corpus expects (empty: as expected)."""
    if "rejected" in expect:
        wanted = expect["rejected"] if isinstance(expect["rejected"], list) else [expect["rejected"]]
        if outcome.rejected is None:
            phase = ((outcome.obj or {}).get("status") or {}).get("phase")
            return [f"{what}: accepted by the API server (phase {phase}), expected a rejection with {wanted}"]
        if not any(w in outcome.rejected for w in wanted):
            return [f"{what}: rejected with {outcome.rejected[:500]!r}, expected one of {wanted}"]
        return []
    if outcome.rejected is not None:
        return [f"{what}: rejected by the API server: {outcome.rejected[:500]}"]
    if outcome.obj is None:
        return [f"{what}: no outcome within {TIMEOUT:.0f}s"]
    status = outcome.obj.get("status") or {}
    phase = status.get("phase")
    problems = []
    message = status.get("errorMessage") or next(
        (c.get("message", "") for c in status.get("conditions") or [] if c.get("type") == "Ready"), ""
    )
    if phase != expect["phase"]:
        problems.append(f"{what}: phase {phase} ({message[:300]!r}), expected {expect['phase']}")
    elif expect.get("message") and expect["message"] not in message:
        problems.append(f"{what}: message {message[:500]!r} lacks {expect['message']!r}")
    warnings = [m for t, _, m in outcome.events if t == "Warning"]
    if expect.get("warning") and not any(expect["warning"] in m for m in warnings):
        problems.append(f"{what}: no Warning Event with {expect['warning']!r} (warnings: {warnings[:3]})")
    if expect.get("noWarning") and warnings:
        problems.append(f"{what}: unexpected Warning Events {warnings[:3]}")
    if phase == "Failed" and not any(expect.get("message", "") in m for m in warnings):
        problems.append(f"{what}: Failed without a Warning Event naming the problem")
    if expect.get("notIn"):
        text = json.dumps(status) + json.dumps(outcome.events)
        if expect["notIn"] in text:
            problems.append(f"{what}: {expect['notIn']!r} appears in the object or its Events")
    return problems


def _file_problems(status: dict[str, Any], expect: dict[str, Any]) -> list[str]:
    problems = tree_problems(status)
    if problems or "files" not in expect:
        return problems
    manifest = {f["path"]: f for f in load_manifest(status["outputDirectory"])["files"]}
    wanted = expect["files"]
    items = (
        [(w.pop("path"), w) for w in (dict(x) for x in wanted)]
        if isinstance(wanted, list)
        else list(wanted.items())
    )
    tree = Path(status["outputDirectory"]) / "tree"
    for path, want in items:
        if isinstance(want, str):
            want = {"content": want}
        record = manifest.get(path)
        if record is None:
            problems.append(f"{path[:80]!r} not generated (have {sorted(manifest)[:5]})")
            continue
        data = (tree / path).read_bytes()
        if "content" in want and data != want["content"].encode():
            problems.append(f"{path[:80]!r}: content {data[:60]!r}")
        if "base64" in want and data != base64.b64decode(want["base64"]):
            problems.append(f"{path[:80]!r}: content differs from base64")
        for key in ("size", "type", "executable", "sha256"):
            if key in want and record.get(key) != want[key]:
                problems.append(f"{path[:80]!r}: {key} {record.get(key)!r}, expected {want[key]!r}")
        if "preview" in want and record.get("preview") != want["preview"]:
            problems.append(f"{path[:80]!r}: preview {record.get('preview')!r}, expected {want['preview']!r}")
        if data and hashlib.sha256(data).hexdigest() != record["sha256"]:
            problems.append(f"{path[:80]!r}: sha256 differs from the manifest")
    if expect.get("exact") and set(manifest) != {p for p, _ in items}:
        problems.append(f"files {sorted(manifest)}, expected exactly {sorted(p for p, _ in items)}")
    return problems


@pytest.mark.parametrize("case", CASES, ids=[f"{c.file.removesuffix('.yaml')}:{c.id}" for c in CASES])
def test_corpus_case(case: Case, corpus: Run, stats: Stats) -> None:
    outcome = corpus.outcomes[case.id]
    stats.add("corpus", "tried")
    status = (outcome.obj or {}).get("status") or {}
    kind = "rejected" if outcome.rejected else str(status.get("phase") or "none").lower()
    stats.add("corpus", kind)
    if kind == "completed" and any(t == "Warning" for t, _, _ in outcome.events):
        stats.add("corpus", "warned")
    problems = _check(outcome, case.expect, case.id)
    if not problems and status.get("phase") == "Completed":
        problems += [f"{case.id}: {p}" for p in _file_problems(status, case.expect)]
    for i, spec in enumerate(case.exports):
        stats.add("corpus", "exports_tried")
        if i >= len(outcome.exports):
            problems.append(f"{case.export_name(i)}: never created (project not Completed)")
            continue
        sub = outcome.exports[i]
        problems += _check(sub, spec["expect"], f"{case.export_name(i)} ({spec['type']})")
        st = (sub.obj or {}).get("status") or {}
        if not problems and st.get("phase") == "Completed":
            files = load_manifest(status["outputDirectory"])["files"]
            prefix = spec.get("repositoryName") or case.id
            problems += [f"{case.export_name(i)}: {p}" for p in archive_problems(st, files, prefix)]
    if problems:
        stats.add("corpus", "mismatches")
    assert not problems, f"{case.about}: " + "\n".join(problems)


def test_corpus_wrote_nothing_elsewhere(corpus: Run, stats: Stats) -> None:
    """Every file of the volume belongs to a case's own directory; canaries never appeared."""
    stats.put("corpus", "duration_s", round(corpus.elapsed))
    problems = [f"canary {c} exists" for case in CASES for c in case.canaries if os.path.lexists(c)]
    ids = {c.id for c in CASES} | {c.export_name(i) for c in CASES for i in range(len(c.exports))}
    for top in ("projects", "exports"):
        base = corpus.data_dir / top
        if not base.is_dir():
            continue
        for ns_dir in base.iterdir():
            if ns_dir.name != corpus.namespace:
                problems.append(f"{ns_dir} is not the corpus namespace")
                continue
            problems += [f"{p} is no case's" for p in ns_dir.iterdir() if p.name not in ids]
    unexpected = {p.name for p in corpus.data_dir.iterdir()} - {"projects", "exports", ".staging"}
    problems += [f"{corpus.data_dir / n} should not exist" for n in sorted(unexpected)]
    problems += _lasting_debris(corpus.data_dir, corpus.tmp_dir)
    assert not problems, problems


def _lasting_debris(data_dir: Path, tmp_dir: Path, patience: float = 20.0) -> list[str]:
    """Debris that outlives the attempt that made it. Two cases retry for as long as the operator
    runs (an unreachable host, a ConfigMap that never comes): each attempt works in a fresh,
    randomly named `.staging` entry and removes it, so one may exist at any moment. An entry seen
    at first and still there after `patience` seconds is real debris; a new attempt's entry has
    another name and is not counted."""
    found = debris(data_dir, tmp_dir)
    deadline = time.monotonic() + patience
    while found and time.monotonic() < deadline:
        time.sleep(0.5)
        found = [entry for entry in debris(data_dir, tmp_dir) if entry in found]
    return found
