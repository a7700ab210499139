"""The API server (and etcd) go away while the operator works: it reconnects and finishes, and no
status ever says Completed about a tree or an archive that is not there and whole.

A control plane of its own (the session's is not disturbed) with one operator. While projects
render and exports archive and publish: kube-apiserver stopped gently, then killed (SIGKILL), then
etcd and kube-apiserver both stopped; after each restart some projects change, so the next outage
lands on work in progress. A watcher checks every status it can read all along.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest
from relsupport import (
    ConsistencyWatcher,
    Stats,
    archive_problems,
    bare_head,
    debris,
    load_manifest,
    repository_problems,
    tree_problems,
    wait_until,
)
from support import EXPORTS, GROUP, PROJECTS, VERSION, create, custom, get, inline_source

from projectgen_dev.controlplane import ControlPlane, find_binaries
from projectgen_dev.fakehosts import FakeGitHub

CRDS = Path(__file__).resolve().parents[3] / "crds"
TOKEN = "ghp_ApiServerRestartToken0123456789ab"
TEMPLATE = (
    "salt {{ salt }}\n{% for i in range(n) %}{% for j in range(1000) %}"
    "line {{ i }}.{{ j }} of a large generated file, padded to look like code\n{% endfor %}{% endfor %}"
)
PROJECTS_ = ("big", "files")
ARCHIVES = {"big-zip": ("big", "zip"), "big-tgz": ("big", "tar.gz"), "files-tar": ("files", "tar")}
OUTAGE_S = 2.0
SETTLE_S = 180.0


@pytest.fixture
def own_control_plane() -> Iterator[ControlPlane]:
    with ControlPlane(find_binaries()) as cp:
        cp.install(CRDS)
        yield cp


def _sources(name: str, salt: int) -> list[dict[str, Any]]:
    if name == "big":
        items = [{"key": "copier", "path": "copier.yml"}, {"key": "big", "path": "big.txt.jinja"}]
        return [
            {"template": {"configMap": {"name": "big-tpl", "items": items}, "data": {"n": 100, "salt": salt}}}
        ]
    return [{"configMap": {"name": "many"}}, inline_source({"salt.txt": f"{salt}\n"})]


def test_operator_survives_apiserver_and_etcd_restarts(
    own_control_plane: ControlPlane, operators: Any, stats: Stats, tmp_path: Path
) -> None:
    cp = own_control_plane
    ns = "outages"
    data = tmp_path / "data"
    op = operators.new((ns,), data, name="outages", kubeconfig=cp.kubeconfig)
    with (
        cp.api_client() as api,
        cp.api_client() as watch_api,
        FakeGitHub(tokens={TOKEN}, root=tmp_path / "gh") as github,
    ):
        core = kubernetes.client.CoreV1Api(api)
        core.create_namespace(kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name=ns)))
        core.create_namespaced_config_map(
            ns,
            kubernetes.client.V1ConfigMap(
                metadata=kubernetes.client.V1ObjectMeta(name="big-tpl"),
                data={"copier": "n:\n  type: int\nsalt:\n  type: int\n", "big": TEMPLATE},
            ),
        )
        core.create_namespaced_config_map(
            ns,
            kubernetes.client.V1ConfigMap(
                metadata=kubernetes.client.V1ObjectMeta(name="many"),
                data={f"f{i:04d}.txt": f"{i}\n" for i in range(800)},
            ),
        )
        core.create_namespaced_secret(
            ns,
            kubernetes.client.V1Secret(
                metadata=kubernetes.client.V1ObjectMeta(name="git-token"), string_data={"token": TOKEN}
            ),
        )
        salt = dict.fromkeys(PROJECTS_, 0)

        def bump(*names: str) -> None:
            for name in names:
                salt[name] += 1
                custom(api).patch_namespaced_custom_object(
                    GROUP, VERSION, ns, PROJECTS, name, {"spec": {"sources": _sources(name, salt[name])}}
                )

        def check_publish(obj: dict[str, Any]) -> list[str]:
            st = obj["status"]
            head = bare_head(github.git.repo_path(st.get("repository") or "none/none"))
            return (
                [] if head == st.get("commitSha") else [f"branch head {head} != status {st.get('commitSha')}"]
            )

        def unsettled() -> str | None:
            projects = {n: get(api, PROJECTS, ns, n) or {} for n in PROJECTS_}
            for name, obj in projects.items():
                st = obj.get("status") or {}
                if (
                    st.get("phase") != "Completed"
                    or st.get("observedGeneration") != obj["metadata"]["generation"]
                ):
                    return f"project {name}: {st.get('phase')}"
            for name, project in (*((n, p) for n, (p, _) in ARCHIVES.items()), ("files-gh", "files")):
                st = (get(api, EXPORTS, ns, name) or {}).get("status") or {}
                if (
                    st.get("phase") != "Completed"
                    or st.get("exportedContentHash") != projects[project]["status"]["contentHash"]
                ):
                    return f"export {name}: {st.get('phase')} {st.get('errorMessage') or ''}"
            return None

        t_start = time.monotonic()

        def outage(what: str, stop: Any, start: Any, *, crash: bool = False) -> None:
            t = time.monotonic()
            stop()
            time.sleep(OUTAGE_S)
            assert op.proc is not None and op.proc.poll() is None, (
                f"the operator exited during the outage ({what})"
            )
            start()
            print(f"{t - t_start:6.1f}s {what}: down and up again in {time.monotonic() - t:.1f}s")
            stats.add("apiserver", "apiserver_restarts")
            if "etcd" in what:
                stats.add("apiserver", "etcd_restarts")
            if crash:
                stats.add("apiserver", "crash_stops")

        with ConsistencyWatcher(watch_api, [ns], check_publish=check_publish) as watcher:
            op.start()
            for name in PROJECTS_:
                create(
                    api,
                    PROJECTS,
                    ns,
                    {
                        "kind": "GeneratedProject",
                        "metadata": {"name": name},
                        "spec": {"projectRef": {"name": "o"}, "sources": _sources(name, 0)},
                    },
                )
            for name, (project, export_type) in ARCHIVES.items():
                create(
                    api,
                    EXPORTS,
                    ns,
                    {
                        "kind": "RepositoryExport",
                        "metadata": {"name": name},
                        "spec": {"generatedProjectRef": {"name": project}, "exportType": export_type},
                    },
                )
            spec = {
                "generatedProjectRef": {"name": "files"},
                "exportType": "github",
                "repositoryName": "files",
                "config": {"apiUrl": github.api_url, "credentialsSecretRef": {"name": "git-token"}},
                # nobody works in the repository: each render goes on top, so its head is the latest render
                "update": {"strategy": "Push"},
            }
            create(
                api, EXPORTS, ns, {"kind": "RepositoryExport", "metadata": {"name": "files-gh"}, "spec": spec}
            )
            # 1. while the first renders run: a graceful stop of kube-apiserver
            wait_until(
                "a project generating",
                lambda: (
                    None
                    if any(
                        ((get(api, PROJECTS, ns, n) or {}).get("status") or {}).get("phase") == "Generating"
                        for n in PROJECTS_
                    )
                    else "not yet"
                ),
                60,
                0.05,
            )
            outage("kube-apiserver (SIGTERM)", lambda: cp.stop_apiserver(timeout=3), cp.start_apiserver)
            # 2. while exports run: kube-apiserver killed
            wait_until(
                "an export exporting",
                lambda: (
                    None
                    if any(
                        ((get(api, EXPORTS, ns, n) or {}).get("status") or {}).get("phase") == "Exporting"
                        for n in (*ARCHIVES, "files-gh")
                    )
                    else "not yet"
                ),
                120,
                0.05,
            )
            outage(
                "kube-apiserver (SIGKILL)",
                lambda: cp.stop_apiserver(timeout=0),
                cp.start_apiserver,
                crash=True,
            )
            # 3. new work, then etcd and kube-apiserver both away
            wait_until("first settle", unsettled, SETTLE_S)
            print(f"{time.monotonic() - t_start:6.1f}s settled")
            bump("big", "files")
            time.sleep(0.5)
            outage(
                "etcd and kube-apiserver",
                lambda: (cp.stop_apiserver(timeout=0), cp.stop_etcd(timeout=0)),
                lambda: (cp.start_etcd(), cp.start_apiserver()),
                crash=True,
            )
            # 4. once more during a render, gently
            bump("big")
            time.sleep(0.3)
            outage("kube-apiserver (SIGTERM) again", lambda: cp.stop_apiserver(timeout=3), cp.start_apiserver)
            t0 = time.monotonic()
            wait_until(
                f"everything settled after the outages (operator log {op.log_path})", unsettled, SETTLE_S
            )
            stats.put("apiserver", "recovery_s", round(time.monotonic() - t0, 1))
            print(f"{time.monotonic() - t_start:6.1f}s settled after the last outage")
            wait_until(
                "the watcher checked every resource",
                lambda: (
                    "; ".join(
                        watcher.unchecked(PROJECTS, ns, PROJECTS_)
                        + watcher.unchecked(EXPORTS, ns, (*ARCHIVES, "files-gh"))
                    )
                    or None
                ),
                30,
            )
        stats.add("apiserver", "watch_checks", watcher.checks)
        stats.add("apiserver", "violations", len(watcher.violations))
        assert op.proc is not None and op.proc.poll() is None, "the operator exited"
        assert not watcher.violations, watcher.violations[:10]

        problems = []
        manifests = {}
        for name in PROJECTS_:
            st = (get(api, PROJECTS, ns, name) or {})["status"]
            problems += [f"{name}: {p}" for p in tree_problems(st)]
            manifests[name] = load_manifest(st["outputDirectory"])["files"]
        for name, (project, _) in ARCHIVES.items():
            st = (get(api, EXPORTS, ns, name) or {})["status"]
            problems += [f"{name}: {p}" for p in archive_problems(st, manifests[project], project)]
        st = (get(api, EXPORTS, ns, "files-gh") or {})["status"]
        problems += repository_problems(
            github.git.repo_path(st["repository"]), st["commitSha"], manifests["files"]
        )
        if github.created != ["octocat/files"]:
            problems.append(f"repositories created: {github.created}")
        problems += debris(data, tmp_path / "outages-tmp")
        assert not problems, problems
