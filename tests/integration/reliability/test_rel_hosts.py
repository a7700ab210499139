"""Slow and failing GitHub / GitLab stand-ins: every publish ends in completion after backoff, in a
clear permanent failure, or (for faults that never heal) in an honest "retrying" status; never in
a hang. Then the token is searched for in every status, Event, the operator's log, its data
directory and its temp directory: raw, base64, and base64 of `x-access-token:TOKEN` /
`oauth2:TOKEN`.

All scenarios run at once against one operator (its own namespace, data and temp directories),
each with a stand-in of its own, so the whole table costs about as much as its slowest row.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest
from relsupport import FULL, Stats, leaks, load_manifest, repository_problems, tree_problems
from support import EXPORTS, PROJECTS, create, events, get, inline_source, project_body, wait_phase

from projectgen_dev.fakehosts import FakeGitHub, FakeGitLab

TOKEN = "ghp_HostFaultS3cret0123456789abcdefABCD"
FILES = {"README.md": "# faults\n", "src/app.py": "print('faults')\n", "run.sh": "#!/bin/sh\nexec true\n"}
NEVER = 10**6


@dataclass
class Scenario:
    name: str
    host: str
    prepare: Callable[[Any], None] | None
    expect: str  # Completed, Failed or Retrying
    message: str = ""
    owner: str | None = None
    tokens: tuple[str, ...] = (TOKEN,)
    timeout: float = 90.0


def _no_push(fake: Any) -> None:
    fake.git.allow_push = False


SCENARIOS = [
    # temporary faults that heal: completed after backoff, one repository
    Scenario(
        "gh-500-twice",
        "github",
        lambda f: f.fail_next("POST", "/user/repos", status=500, times=2),
        "Completed",
    ),
    Scenario("gh-502-get", "github", lambda f: f.fail_next("GET", "/user", status=502, times=2), "Completed"),
    Scenario(
        "gh-429-retry-after",
        "github",
        lambda f: f.fail_next("GET", "/user", status=429, headers={"Retry-After": "2"}, times=2),
        "Completed",
    ),
    Scenario("gh-drop", "github", lambda f: f.fail_next("GET", "/user", drop=True, times=2), "Completed"),
    Scenario(
        "gh-drop-after-create",
        "github",
        lambda f: f.fail_next("POST", "/user/repos", drop=True, after=True),
        "Completed",
    ),
    Scenario(
        "gh-slow",
        "github",
        lambda f: f.fail_next("GET", "/repos/*", status=None, delay=3, times=2),
        "Completed",
    ),
    Scenario(
        "gh-push-503-twice",
        "github",
        lambda f: f.git.fail_next(503, match="git-receive-pack", times=2),
        "Completed",
    ),
    Scenario(
        "gl-500-twice", "gitlab", lambda f: f.fail_next("POST", "/projects", status=500, times=2), "Completed"
    ),
    Scenario("gl-drop", "gitlab", lambda f: f.fail_next("GET", "/user", drop=True, times=2), "Completed"),
    Scenario(
        "gl-429-retry-after",
        "gitlab",
        lambda f: f.fail_next("POST", "/projects", status=429, headers={"Retry-After": "1"}),
        "Completed",
    ),
    # permanent: a clear message, no repository
    Scenario("gh-401", "github", None, "Failed", "token was refused", tokens=("another-token",)),
    Scenario(
        "gh-403",
        "github",
        lambda f: f.fail_next("POST", "/user/repos", status=403, times=NEVER),
        "Failed",
        "403",
    ),
    Scenario("gh-404-owner", "github", None, "Failed", "'ghost' not found", owner="ghost"),
    Scenario(
        "gh-422",
        "github",
        lambda f: f.fail_next("POST", "/user/repos", status=422, times=NEVER),
        "Failed",
        "422",
    ),
    Scenario("gh-push-refused", "github", _no_push, "Failed", "refused by the git server"),
    Scenario("gl-401", "gitlab", None, "Failed", "token was refused", tokens=("another-token",)),
    Scenario("gl-404-group", "gitlab", None, "Failed", "not found", owner="no/such-group"),
    Scenario("gl-push-refused", "gitlab", _no_push, "Failed", "refused by the git server"),
    # faults that never heal: retried with backoff, and the status says so
    Scenario(
        "gh-500-forever",
        "github",
        lambda f: f.fail_next("GET", "/user", status=500, times=NEVER),
        "Retrying",
        "500",
    ),
    Scenario(
        "gh-drop-forever", "github", lambda f: f.fail_next("GET", "/user", drop=True, times=NEVER), "Retrying"
    ),
    Scenario(
        "gh-429-hour",
        "github",
        lambda f: f.fail_next("GET", "/user", status=429, headers={"Retry-After": "3600"}, times=NEVER),
        "Retrying",
        "rate limit",
    ),
    Scenario(
        "gh-push-503-forever",
        "github",
        lambda f: f.git.fail_next(503, match="git-receive-pack", times=NEVER),
        "Retrying",
        "503",
    ),
    Scenario(
        "gl-503-forever",
        "gitlab",
        lambda f: f.fail_next("GET", "/user", status=503, times=NEVER),
        "Retrying",
        "503",
    ),
]
if FULL:  # a reply slower than the client's 30 s timeout, then a normal one
    SCENARIOS.append(
        Scenario(
            "gh-timeout",
            "github",
            lambda f: f.fail_next("GET", "/user", status=None, delay=40),
            "Completed",
            timeout=240,
        )
    )


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[dict[str, FakeGitHub | FakeGitLab]]:
    with ExitStack() as stack:
        fakes: dict[str, FakeGitHub | FakeGitLab] = {}
        for sc in SCENARIOS:
            fake: FakeGitHub | FakeGitLab
            if sc.host == "github":
                fake = FakeGitHub(
                    tokens=set(sc.tokens), user="octocat", orgs=["acme"], root=tmp_path / "hosts" / sc.name
                )
            else:
                fake = FakeGitLab(
                    tokens=set(sc.tokens), user="root", groups=["team"], root=tmp_path / "hosts" / sc.name
                )
            fakes[sc.name] = stack.enter_context(fake)
            if sc.prepare:
                sc.prepare(fake)
        yield fakes


def _state(obj: dict[str, Any] | None) -> tuple[str, str, str]:
    """(phase, Ready reason, message) of an export."""
    status = (obj or {}).get("status") or {}
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
    return (
        status.get("phase") or "",
        ready.get("reason") or "",
        status.get("errorMessage") or ready.get("message") or "",
    )


def test_host_faults_end_in_completion_or_a_clear_failure_and_never_leak_the_token(
    api_client: kubernetes.client.ApiClient,
    solo_namespace: str,
    operators: Any,
    hosts: dict[str, FakeGitHub | FakeGitLab],
    stats: Stats,
    tmp_path: Path,
) -> None:
    ns = solo_namespace
    data_dir = tmp_path / "data"
    op = operators.new((ns,), data_dir, name="hosts", env={"PROJECTGEN_WORKERS": "8"})
    op.start()
    core = kubernetes.client.CoreV1Api(api_client)
    core.create_namespaced_secret(
        ns,
        kubernetes.client.V1Secret(
            metadata=kubernetes.client.V1ObjectMeta(name="git-token"), string_data={"token": TOKEN}
        ),
    )
    create(api_client, PROJECTS, ns, project_body("src", [inline_source(FILES, executable=("run.sh",))]))
    project = wait_phase(api_client, PROJECTS, ns, "src", "Completed", timeout=60)
    assert not tree_problems(project["status"])
    for sc in SCENARIOS:
        config: dict[str, Any] = {
            "apiUrl": hosts[sc.name].api_url,
            "credentialsSecretRef": {"name": "git-token"},
        }
        if sc.owner:
            config["owner"] = sc.owner
        body = {
            "kind": "RepositoryExport",
            "metadata": {"name": sc.name},
            "spec": {
                "generatedProjectRef": {"name": "src"},
                "exportType": sc.host,
                "repositoryName": f"{sc.name}-repo",
                "config": config,
            },
        }
        create(api_client, EXPORTS, ns, body)

    started = time.monotonic()
    results: dict[str, tuple[str, str, str]] = {}
    waiting = {sc.name: sc for sc in SCENARIOS}
    while waiting and time.monotonic() - started < max(sc.timeout for sc in waiting.values()):
        for name, sc in list(waiting.items()):
            phase, reason, message = _state(get(api_client, EXPORTS, ns, name))
            reached = (
                phase == sc.expect
                if sc.expect in ("Completed", "Failed")
                else (phase == "Exporting" and reason == "Retrying" and sc.message in message)
            )
            if reached or phase in ("Completed", "Failed") or time.monotonic() - started > sc.timeout:
                results[name] = (phase, reason, message)
                del waiting[name]
        time.sleep(0.5)
    for name in waiting:
        results[name] = _state(get(api_client, EXPORTS, ns, name))
    elapsed = time.monotonic() - started

    problems = []
    manifest_files = None
    for sc in SCENARIOS:
        phase, reason, message = results[sc.name]
        fake = hosts[sc.name]
        stats.add("hosts", "scenarios")
        got = "Retrying" if (phase, reason) == ("Exporting", "Retrying") else phase
        stats.add(
            "hosts", {"Completed": "completed", "Failed": "failed", "Retrying": "retrying"}.get(got, "other")
        )
        if got != sc.expect or sc.message not in message:
            problems.append(f"{sc.name}: {got} ({message[:200]!r}), expected {sc.expect} with {sc.message!r}")
            continue
        if sc.expect == "Completed":
            obj = get(api_client, EXPORTS, ns, sc.name) or {}
            status = obj["status"]
            if manifest_files is None:
                manifest_files = load_manifest(project["status"]["outputDirectory"])["files"]
            bare = fake.git.repo_path(status["repository"])
            problems += [
                f"{sc.name}: {p}" for p in repository_problems(bare, status["commitSha"], manifest_files)
            ]
            if len(fake.created) != 1:
                problems.append(f"{sc.name}: repositories created {fake.created}, expected exactly one")
        elif sc.expect == "Failed":
            warnings = [e.message or "" for e in events(api_client, ns, sc.name) if e.type == "Warning"]
            if not any(sc.message in w for w in warnings):
                problems.append(f"{sc.name}: Failed without a Warning Event saying {sc.message!r}")
        pushed_first = ("gh-push-refused", "gl-push-refused", "gh-push-503-forever")
        if sc.expect != "Completed" and sc.name not in pushed_first and fake.created:
            problems.append(f"{sc.name}: created {fake.created} although it never got that far")
    stats.put("hosts", "duration_s", round(elapsed))

    # The token, in every spelling, after every failure mode: each export's status and Events, then
    # what they share (the operator's log, its data and temp directories, the project).
    found = []
    for sc in SCENARIOS:
        texts = {
            f"status of {sc.name}": repr(get(api_client, EXPORTS, ns, sc.name)),
            f"Events of {sc.name}": repr([(e.reason, e.message) for e in events(api_client, ns, sc.name)]),
        }
        found += leaks(TOKEN, texts, [])
        stats.add("leaks", "scans")
    shared = {
        "operator log": op.logs(),
        "project": repr(get(api_client, PROJECTS, ns, "src")),
        "all Events": repr([(e.reason, e.message) for e in core.list_namespaced_event(ns).items]),
    }
    found += leaks(TOKEN, shared, [data_dir, tmp_path / "hosts-tmp"])
    stats.add("leaks", "scans")
    stats.add("leaks", "failure_modes", sum(1 for sc in SCENARIOS if sc.expect != "Completed"))
    stats.add("leaks", "found", len(found))
    assert not problems, "\n".join(problems)
    assert not found, found
