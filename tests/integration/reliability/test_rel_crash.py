"""Crash recovery: SIGKILL the operator at random points while it generates, archives and publishes.

One operator (its own `solo-*` namespace and data directory) serves a workload of three projects
(a ~10 MB file rendered by a template, 1,500 files from a ConfigMap plus a templated package, a few
inline files) with eight exports (zip, tar, tar.gz, GitHub and GitLab stand-ins). Each round
changes some projects, waits a random time, kills the operator with SIGKILL, starts it again (and
now and then kills it again during start-up), waits until everything has settled and checks:

- every resource is Completed for its current generation, exports for the current contentHash;
- each tree equals its manifest.json (SHA-256 of every file), each archive its status (size,
  SHA-256) and, extracted, exactly the manifest; each pushed commit exactly the manifest;
- one repository per publish export, ever (the stand-ins' `created` has no duplicates);
- no debris: `.staging` empty, no temp file beside an archive, one render per resource, nothing
  left in the operator's TMPDIR;
- all along, a watcher polls every status: a `Completed` status never names a tree or an archive
  that is missing or not what it says.

`PROJECTGEN_CHAOS_SEED` replays a run's choices (timing still varies); `PROJECTGEN_CHAOS_KILLS`
sets the number of kills that must land while work is in progress (default 30, about three minutes
on two cores). What each kill interrupted is read from what the dead operator left (staging,
temp archives, phases); a kill that found the operator idle does not count, and the test fails
when fewer than one kill in three lands in work.
"""

from __future__ import annotations

import base64
import os
import random
import subprocess
import time
from collections.abc import Callable, Iterator
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
    sha256_file,
    tree_problems,
    wait_until,
)
from support import EXPORTS, GROUP, PROJECTS, VERSION, create, custom, get

from projectgen_dev.controlplane import ControlPlane
from projectgen_dev.fakehosts import FakeGitHub, FakeGitLab

TOKEN = "ghp_ChaosS3cretToken0123456789abcdefXYZ"
BIG_N = 60  # x 1000 lines of ~70 bytes: a ~4 MB file
MANY = 400
MODULES = 8
ROUND_TIMEOUT = 120.0
BIG_TEMPLATE = (
    "salt {{ salt }}\n{% for i in range(n) %}{% for j in range(1000) %}"
    "line {{ i }}.{{ j }} of a large generated file, padded to look like code\n{% endfor %}{% endfor %}"
)
ARCHIVES = {"big-zip": "zip", "big-tgz": "tar.gz", "big-tar": "tar", "many-zip": "zip", "small-tgz": "tar.gz"}
PUBLISHES = {"many-gh": "github", "many-gl": "gitlab", "small-gh": "github"}
EXPORT_PROJECT = {name: name.split("-")[0] for name in (*ARCHIVES, *PUBLISHES)}


def kills_wanted() -> int:
    return int(os.environ.get("PROJECTGEN_CHAOS_KILLS", "30"))


def chaos_seed() -> int:
    raw = os.environ.get("PROJECTGEN_CHAOS_SEED", "")
    return int(raw) if raw else random.SystemRandom().randrange(2**32)


def big_sources(salt: int) -> list[dict[str, Any]]:
    items = [{"key": "copier", "path": "copier.yml"}, {"key": "big", "path": "data/big.txt.jinja"}]
    return [
        {"template": {"configMap": {"name": "big-tpl", "items": items}, "data": {"n": BIG_N, "salt": salt}}}
    ]


def many_sources(salt: int) -> list[dict[str, Any]]:
    items = [{"key": "copier", "path": "copier.yml"}] + [
        {"key": f"m{i}", "path": f"{{{{ pkg }}}}/sub{i % 4}/mod{i}.py.jinja"} for i in range(MODULES)
    ]
    return [
        {"configMap": {"name": "many-files"}},
        {
            "template": {
                "configMap": {"name": "pkg-tpl", "items": items},
                "data": {"pkg": "chaos", "salt": salt},
            }
        },
        {
            "inline": {
                "files": [
                    {"path": "ROUND.txt", "content": f"round {salt}\n"},
                    {"path": "bin/run", "content": "#!/bin/sh\necho chaos\n", "executable": True},
                ]
            }
        },
    ]


def small_sources(salt: int) -> list[dict[str, Any]]:
    return [
        {
            "inline": {
                "files": [
                    {"path": "README.md", "content": f"# small, round {salt}\n"},
                    {"path": "tools/x.sh", "content": "#!/bin/sh\nexit 0\n", "executable": True},
                    {"path": "blob.bin", "contentBase64": base64.b64encode(bytes(range(256)) * 8).decode()},
                ]
            }
        }
    ]


SOURCES: dict[str, Callable[[int], list[dict[str, Any]]]] = {
    "big": big_sources,
    "many": many_sources,
    "small": small_sources,
}


class Workload:
    """The resources of the harness, their expected state, and every check of a settled round."""

    def __init__(
        self,
        api: kubernetes.client.ApiClient,
        namespace: str,
        data_dir: Path,
        tmp_dir: Path,
        github: FakeGitHub,
        gitlab: FakeGitLab,
    ) -> None:
        self.api = api
        self.ns = namespace
        self.data_dir = data_dir
        self.tmp_dir = tmp_dir
        self.github = github
        self.gitlab = gitlab
        self.salt = dict.fromkeys(SOURCES, 0)

    def create(self) -> None:
        core = kubernetes.client.CoreV1Api(self.api)

        def cm(name: str, data: dict[str, str]) -> None:
            body = kubernetes.client.V1ConfigMap(
                metadata=kubernetes.client.V1ObjectMeta(name=name), data=data
            )
            core.create_namespaced_config_map(self.ns, body)

        cm("big-tpl", {"copier": "n:\n  type: int\nsalt:\n  type: int\n", "big": BIG_TEMPLATE})
        cm("many-files", {f"f{i:05d}.txt": f"file {i}\n" * (1 + i % 7) for i in range(MANY)})
        tpl = {"copier": "pkg:\n  type: str\nsalt:\n  type: int\n"}
        tpl |= {
            f"m{i}": f"# module {i} of {{{{ pkg }}}}, salt {{{{ salt }}}}\nVALUE = {i}\n"
            for i in range(MODULES)
        }
        cm("pkg-tpl", tpl)
        secret = kubernetes.client.V1Secret(
            metadata=kubernetes.client.V1ObjectMeta(name="git-token"), string_data={"token": TOKEN}
        )
        core.create_namespaced_secret(self.ns, secret)
        for name, sources in SOURCES.items():
            body = {
                "kind": "GeneratedProject",
                "metadata": {"name": name},
                "spec": {"projectRef": {"name": "chaos"}, "sources": sources(0)},
            }
            create(self.api, PROJECTS, self.ns, body)
        for name, export_type in ARCHIVES.items():
            spec: dict[str, Any] = {
                "generatedProjectRef": {"name": EXPORT_PROJECT[name]},
                "exportType": export_type,
            }
            if name.startswith("big"):
                spec |= {"repositoryName": "big-project", "compressionLevel": 1}
            create(
                self.api,
                EXPORTS,
                self.ns,
                {"kind": "RepositoryExport", "metadata": {"name": name}, "spec": spec},
            )
        owners = {"many-gh": "acme", "many-gl": "platform/chaos", "small-gh": None}
        for name, host in PUBLISHES.items():
            fake = self.github if host == "github" else self.gitlab
            config: dict[str, Any] = {"apiUrl": fake.api_url, "credentialsSecretRef": {"name": "git-token"}}
            if owners[name]:
                config["owner"] = owners[name]
            spec = {
                "generatedProjectRef": {"name": EXPORT_PROJECT[name]},
                "exportType": host,
                "repositoryName": f"{name}-repo",
                "config": config,
                # nobody works in these repositories: each render goes on top (the branch head is checked)
                "update": {"strategy": "Push"},
            }
            create(
                self.api,
                EXPORTS,
                self.ns,
                {"kind": "RepositoryExport", "metadata": {"name": name}, "spec": spec},
            )

    def bump(self, names: list[str]) -> None:
        for name in names:
            self.salt[name] += 1
            custom(self.api).patch_namespaced_custom_object(
                GROUP, VERSION, self.ns, PROJECTS, name, {"spec": {"sources": SOURCES[name](self.salt[name])}}
            )

    def fake_of(self, export: dict[str, Any]) -> FakeGitHub | FakeGitLab:
        return self.github if export["spec"]["exportType"] == "github" else self.gitlab

    def check_publish(self, export: dict[str, Any]) -> list[str]:
        """For the watcher: a Completed publish names the commit its repository's branch holds."""
        status = export["status"]
        repo = status.get("repository")
        if not repo or not status.get("commitSha"):
            return ["Completed without repository or commitSha"]
        head = bare_head(self.fake_of(export).git.repo_path(repo))
        return (
            []
            if head == status["commitSha"]
            else [f"branch head {head} != status commit {status['commitSha']}"]
        )

    def objects(self) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
        projects = {name: get(self.api, PROJECTS, self.ns, name) or {} for name in SOURCES}
        exports = {name: get(self.api, EXPORTS, self.ns, name) or {} for name in EXPORT_PROJECT}
        return projects, exports

    def unsettled(self) -> str | None:
        """Why the round has not settled yet (None: every resource done with the current spec)."""
        projects, exports = self.objects()
        for name, obj in projects.items():
            st = obj.get("status") or {}
            if (
                st.get("phase") != "Completed"
                or st.get("observedGeneration") != obj["metadata"]["generation"]
            ):
                return f"project {name}: {st.get('phase')} gen {st.get('observedGeneration')}"
        for name, obj in exports.items():
            st = obj.get("status") or {}
            project = projects[EXPORT_PROJECT[name]]
            if (
                st.get("phase") != "Completed"
                or st.get("observedGeneration") != obj["metadata"]["generation"]
                or st.get("exportedContentHash") != project["status"]["contentHash"]
            ):
                return f"export {name}: {st.get('phase')} {st.get('errorMessage') or ''}"[:300]
            if name in PUBLISHES and self.check_publish(obj):
                return f"export {name}: {self.check_publish(obj)}"
        if (self.data_dir / ".staging").is_dir() and any((self.data_dir / ".staging").iterdir()):
            return "staging not empty yet"
        return None

    def problems(self, *, clone_into: Path | None = None) -> list[str]:
        """Everything that must hold once settled."""
        projects, exports = self.objects()
        problems: list[str] = []
        manifests = {}
        for name, obj in projects.items():
            problems += [f"project {name}: {p}" for p in tree_problems(obj["status"])]
            manifests[name] = load_manifest(obj["status"]["outputDirectory"])["files"]
        for name, obj in exports.items():
            files = manifests[EXPORT_PROJECT[name]]
            st = obj["status"]
            if name in ARCHIVES:
                prefix = obj["spec"].get("repositoryName") or EXPORT_PROJECT[name]
                problems += [f"export {name}: {p}" for p in archive_problems(st, files, prefix)]
                continue
            fake = self.fake_of(obj)
            bare = fake.git.repo_path(st["repository"])
            problems += [f"export {name}: {p}" for p in repository_problems(bare, st["commitSha"], files)]
            if clone_into is not None:
                problems += [
                    f"export {name}: {p}" for p in clone_problems(fake, st, files, clone_into / name)
                ]
        for fake in (self.github, self.gitlab):
            if len(fake.created) != len(set(fake.created)):
                problems.append(f"{fake.kind} created a repository twice: {fake.created}")
        expected = {"acme/many-gh-repo", "octocat/small-gh-repo", "platform/chaos/many-gl-repo"}
        created = set(self.github.created) | set(self.gitlab.created)
        if created != expected:
            problems.append(f"repositories created {sorted(created)}, expected {sorted(expected)}")
        problems += [f"debris: {d}" for d in debris(self.data_dir, self.tmp_dir)]
        return problems

    def kill_point(self) -> str:
        """What the killed operator was doing, from what it left on disk and in status."""
        staging = (
            [p.name for p in (self.data_dir / ".staging").iterdir()]
            if (self.data_dir / ".staging").is_dir()
            else []
        )
        if any(n.startswith("projectgen-publish-") for n in staging):
            return "publishing"
        if list((self.data_dir / "exports").glob(f"{self.ns}/*/*/.*.tmp")):
            return "archiving"
        if any(n.startswith("gen-") for n in staging):
            return "generating"
        if any(n.startswith("trash-") for n in staging):
            return "removing"
        projects, exports = self.objects()
        phases = {(o.get("status") or {}).get("phase") for o in [*projects.values(), *exports.values()]}
        if phases & {"Generating", "Exporting", "Pending"}:
            return "between_steps"
        return "idle"


def clone_problems(
    fake: FakeGitHub | FakeGitLab, status: dict[str, Any], files: list[dict[str, Any]], dest: Path
) -> list[str]:
    """Clone the repository with the real git over HTTP and compare the checkout with `files`."""
    user = "x-access-token" if fake.kind == "github" else "oauth2"
    url = fake.git.url(status["repository"]).replace("http://", f"http://{user}:{TOKEN}@")
    env = {
        "PATH": os.environ["PATH"],
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "HOME": str(dest.parent),
    }
    proc = subprocess.run(
        ["git", "clone", "-q", url, str(dest)], capture_output=True, env=env, check=False, timeout=120
    )
    if proc.returncode != 0:
        return [f"clone failed: {proc.stderr.decode(errors='replace')[-300:].replace(TOKEN, '***')}"]
    head = subprocess.run(
        ["git", "-C", str(dest), "rev-parse", "HEAD"], capture_output=True, text=True, env=env, check=True
    )
    problems = [] if head.stdout.strip() == status["commitSha"] else ["clone HEAD is not the status commit"]
    got = {}
    for path in dest.rglob("*"):
        rel = path.relative_to(dest).as_posix()
        if rel == ".git" or rel.startswith(".git/") or not path.is_file():
            continue
        got[rel] = (sha256_file(path), os.access(path, os.X_OK))
    want = {f["path"]: (f["sha256"], bool(f.get("executable"))) for f in files}
    if got != want:
        diff = sorted(set(got.items()) ^ set(want.items()))[:4]
        problems.append(f"cloned tree differs from the manifest: {diff}")
    return problems


@pytest.fixture
def fakes() -> Iterator[tuple[FakeGitHub, FakeGitLab]]:
    with (
        FakeGitHub(tokens={TOKEN}, user="octocat", orgs=["acme"]) as github,
        FakeGitLab(tokens={TOKEN}, user="root", groups=["platform/chaos"]) as gitlab,
    ):
        yield github, gitlab


def test_sigkill_at_random_points_loses_nothing(
    api_client: kubernetes.client.ApiClient,
    control_plane: ControlPlane,
    solo_namespace: str,
    operators: Any,
    fakes: tuple[FakeGitHub, FakeGitLab],
    stats: Stats,
    tmp_path: Path,
) -> None:
    seed, wanted = chaos_seed(), kills_wanted()
    rng = random.Random(seed)
    print(f"chaos seed {seed} (PROJECTGEN_CHAOS_SEED={seed} replays the choices), {wanted} kills")
    stats.put("crash", "seed", seed)
    data_dir = tmp_path / "data"
    op = operators.new((solo_namespace,), data_dir, name="chaos")
    work = Workload(api_client, solo_namespace, data_dir, tmp_path / "chaos-tmp", *fakes)
    started = time.monotonic()
    kills = in_work = 0
    context = f"(seed {seed}; operator log {op.log_path})"

    def settle(what: str) -> None:
        t = time.monotonic()
        wait_until(f"{what} settled {context}", work.unsettled, ROUND_TIMEOUT, interval=0.25)
        t2 = time.monotonic()
        problems = work.problems()
        assert not problems, f"{what}: {problems[:10]} {context}"
        print(f"{what}: settled in {t2 - t:.1f}s, checked in {time.monotonic() - t2:.1f}s")

    def kill(point: str | None = None) -> str:
        nonlocal kills
        op.kill()
        kills += 1
        point = point or work.kill_point()
        stats.add("crash", "kills")
        stats.add("crash", f"at_{point}")
        return point

    with (
        control_plane.api_client() as watch_api,
        ConsistencyWatcher(watch_api, [solo_namespace], check_publish=work.check_publish) as watcher,
    ):
        try:
            op.start()
            work.create()
            settle("initial workload")
            # Unbroken rounds measure how long each project's change takes: kills land within that.
            horizon = {}
            for name in SOURCES:
                t0 = time.monotonic()
                work.bump([name])
                settle(f"warm-up round ({name})")
                horizon[name] = max(0.5, (time.monotonic() - t0) * 1.1)
            stats.put("crash", "kill_window_s", {k: round(v, 1) for k, v in horizon.items()})
            round_no = 0
            while in_work < wanted:
                assert kills < 3 * wanted, (
                    f"only {in_work} of {kills} kills landed while work was in progress {context}"
                )
                round_no += 1
                names = [n for n in SOURCES if rng.random() < 0.5] or [rng.choice(list(SOURCES))]
                work.bump(names)
                time.sleep(max(horizon[n] for n in names) * rng.random() ** 1.5)  # early points more often
                # Killed after the work was done: aim earlier for these projects next time (and later
                # when it landed in the work), so most kills hit work in progress.
                point = kill()
                in_work += point != "idle"
                factor = 0.75 if point == "idle" else 1.05
                for n in names:
                    horizon[n] = min(max(0.3, horizon[n] * factor), 20.0)
                t = time.monotonic()
                op.start()
                print(f"restart took {time.monotonic() - t:.1f}s")
                if in_work < wanted and rng.random() < 0.2:
                    time.sleep(rng.uniform(0, 1.0))
                    kill("startup")  # during start-up: resuming every resource, cleaning staging
                    op.start()
                settle(f"round {round_no} ({names} changed, {kills} kills)")
                stats.add("crash", "rounds_verified")
            wait_until("last round settled", work.unsettled, ROUND_TIMEOUT)
            problems = work.problems(clone_into=tmp_path / "clones")
            assert not problems, f"at the end: {problems[:10]} {context}"
            wait_until(
                "the watcher checked every resource",
                lambda: (
                    "; ".join(
                        watcher.unchecked(PROJECTS, solo_namespace, SOURCES)
                        + watcher.unchecked(EXPORTS, solo_namespace, EXPORT_PROJECT)
                    )
                    or None
                ),
                30,
            )
        finally:
            stats.add("crash", "watch_checks", watcher.checks)
            stats.add("crash", "violations", len(watcher.violations))
            stats.put("crash", "kills_in_work", in_work)
    assert not watcher.violations, f"statuses that were not true: {watcher.violations[:10]} {context}"
    stats.put("crash", "duration_s", round(time.monotonic() - started))
    print(f"{kills} kills survived in {time.monotonic() - started:.0f}s {context}")
