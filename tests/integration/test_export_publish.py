"""RepositoryExport to GitHub / GitLab through the operator, against loopback stand-ins of their APIs
and a real git smart-HTTP server; the pushed repository is cloned with the real git."""

from __future__ import annotations

import base64
import hashlib
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from kubernetes import client
from support import (
    EXPORTS,
    PROJECTS,
    OperatorProcess,
    condition,
    create,
    custom,
    events,
    inline_source,
    project_body,
    regenerate,
    wait_event,
    wait_exported,
    wait_for,
    wait_phase,
)
from test_operator_metrics import scrape, value

from projectgen.export.publish import secret_forms
from projectgen.export.publish.redaction import private_key_forms
from projectgen_dev.fakehosts import FakeGitHub, FakeGitLab
from projectgen_dev.gitea import GiteaServer, GiteaUser

GROUP, VERSION = "projectgen.io", "v1alpha1"
TOKEN = "ghp_IntegrationS3cret0123456789abcdef"
SECRET_FORMS = (
    TOKEN,
    base64.b64encode(TOKEN.encode()).decode(),
    base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode(),
    base64.b64encode(f"oauth2:{TOKEN}".encode()).decode(),
)
APP_ID = 31337
FILES = {"README.md": "# Billing\n", "src/billing/app.py": "print('billing')\n", "run.sh": "#!/bin/sh\n"}


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    with FakeGitHub(tokens={TOKEN}, user="octocat", orgs=["acme"]) as fake:
        yield fake


@pytest.fixture
def gitlab() -> Iterator[FakeGitLab]:
    with FakeGitLab(tokens={TOKEN}, user="root") as fake:
        fake.add_group("platform/services", visibility="internal")
        yield fake


def secret(
    api: client.ApiClient, namespace: str, name: str = "git-token", key: str = "token", value: str = TOKEN
) -> None:
    body = client.V1Secret(metadata=client.V1ObjectMeta(name=name), string_data={key: value})
    client.CoreV1Api(api).create_namespaced_secret(namespace, body)


def publish_body(name: str, host: str, api_url: str, **config: Any) -> dict[str, Any]:
    cfg = {"apiUrl": api_url, "credentialsSecretRef": {"name": "git-token"}, **config}
    return {
        "kind": "RepositoryExport",
        "metadata": {"name": name},
        "spec": {
            "generatedProjectRef": {"name": "billing"},
            "exportType": host,
            "repositoryName": "billing-api",
            "config": cfg,
        },
    }


def make_project(api: client.ApiClient, namespace: str, files: dict[str, str] = FILES) -> dict[str, Any]:
    create(api, PROJECTS, namespace, project_body("billing", [inline_source(files, executable=("run.sh",))]))
    return wait_phase(api, PROJECTS, namespace, "billing", "Completed", timeout=60)


def finished(api: client.ApiClient, namespace: str, name: str, timeout: float = 90) -> dict[str, Any]:
    return wait_phase(api, EXPORTS, namespace, name, "Completed", "Failed", timeout=timeout)


def clone(url: str, dest: Path, user: str, token: str = TOKEN) -> dict[str, tuple[str, str]]:
    """path -> (sha256, git mode) of the default branch, cloned with the real git."""
    auth = url.replace("http://", f"http://{user}:{token}@")
    subprocess.run(["git", "clone", "-q", auth, str(dest)], check=True, capture_output=True)
    listing = subprocess.run(
        ["git", "-C", str(dest), "ls-tree", "-r", "HEAD"], check=True, capture_output=True, text=True
    ).stdout
    out = {}
    for line in listing.splitlines():
        meta, path = line.split("\t", 1)
        out[path] = (hashlib.sha256((dest / path).read_bytes()).hexdigest(), meta.split()[0])
    return out


def expected_tree(project: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {
        f["path"]: (f["sha256"], "100755" if f["path"] == "run.sh" else "100644")
        for f in project["status"]["files"]
    }


def assert_no_leak(
    api: client.ApiClient,
    namespace: str,
    names: list[str],
    operator: OperatorProcess,
    forms: tuple[str, ...] = SECRET_FORMS,
) -> None:
    """The token appears in no status, Event, operator log line, or file of the data directory."""
    haystacks = [operator.logs()]
    for name in names:
        obj = custom(api).get_namespaced_custom_object(GROUP, VERSION, namespace, EXPORTS, name)
        haystacks.append(repr(obj))
        haystacks += [f"{e.reason} {e.message}" for e in events(api, namespace, name)]
    for form in forms:
        assert not any(form in text for text in haystacks), "token leaked into status, events or logs"
    for path in operator.data_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not any(form.encode() in data for form in forms), f"token leaked into {path}"


@pytest.mark.parametrize("owner", [None, "acme"])
def test_github_publish(
    api_client: client.ApiClient,
    namespace: str,
    github: FakeGitHub,
    operator: OperatorProcess,
    tmp_path: Path,
    owner: str | None,
) -> None:
    project = make_project(api_client, namespace)
    secret(api_client, namespace)
    extra = {"owner": owner} if owner else {}
    create(
        api_client,
        EXPORTS,
        namespace,
        publish_body(
            "gh", "github", github.api_url, description="Billing API", topics=["python", "billing"], **extra
        ),
    )
    obj = finished(api_client, namespace, "gh")
    status = obj["status"]
    assert status["phase"] == "Completed", status
    full = f"{owner or 'octocat'}/billing-api"
    assert github.created == [full]
    repo = github.repo(full)
    assert repo["private"] is True and repo["description"] == "Billing API"
    assert status["repositoryUrl"] == f"{github.base_url}/{full}"
    assert status["repository"] == full and status["exportedContentHash"] == project["status"]["contentHash"]
    tree = clone(github.git.url(full), tmp_path / "clone", "x-access-token")
    assert tree == expected_tree(project)
    head = subprocess.run(
        ["git", "-C", str(tmp_path / "clone"), "rev-parse", "HEAD"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert status["commitSha"] == head
    assert condition(obj, "Ready")["status"] == "True"
    assert_no_leak(api_client, namespace, ["gh"], operator)


def test_gitlab_publish_to_a_group_and_repush_after_regeneration(
    api_client: client.ApiClient,
    namespace: str,
    gitlab: FakeGitLab,
    operator: OperatorProcess,
    tmp_path: Path,
) -> None:
    make_project(api_client, namespace)
    secret(api_client, namespace)
    body = publish_body("gl", "gitlab", gitlab.api_url, owner="platform/services", visibility="internal")
    body["spec"]["update"] = {"strategy": "Push"}  # nobody works in it: the update goes on top
    create(api_client, EXPORTS, namespace, body)
    first = finished(api_client, namespace, "gl")["status"]
    assert first["phase"] == "Completed", first
    assert gitlab.created == ["platform/services/billing-api"]
    assert gitlab.project("platform/services/billing-api")["visibility"] == "internal"
    project = regenerate(api_client, namespace, "billing", [inline_source({"README.md": "# v2\n"})])
    obj = wait_exported(api_client, namespace, "gl", project, timeout=90)
    second = obj["status"]
    assert second["commitSha"] != first["commitSha"]
    url = gitlab.git.url("platform/services/billing-api")
    assert clone(url, tmp_path / "c", "oauth2") == {
        "README.md": (hashlib.sha256(b"# v2\n").hexdigest(), "100644")
    }
    parent = subprocess.run(
        ["git", "-C", str(tmp_path / "c"), "rev-parse", "HEAD^"], check=True, capture_output=True, text=True
    ).stdout.strip()
    assert parent == first["commitSha"]
    assert gitlab.created == ["platform/services/billing-api"]  # still one repository
    assert_no_leak(api_client, namespace, ["gl"], operator)


def test_a_team_commit_survives_an_update(
    api_client: client.ApiClient,
    namespace: str,
    gitlab: FakeGitLab,
    operator: OperatorProcess,
    tmp_path: Path,
) -> None:
    """Issue 23: a developer adds HUMAN.md to main; the next render must not erase it."""
    make_project(api_client, namespace)
    secret(api_client, namespace)
    create(
        api_client,
        EXPORTS,
        namespace,
        publish_body("gl", "gitlab", gitlab.api_url, owner="platform/services"),
    )
    first = finished(api_client, namespace, "gl")["status"]
    assert first["phase"] == "Completed", first
    url = gitlab.git.url("platform/services/billing-api").replace("http://", f"http://oauth2:{TOKEN}@")
    work = tmp_path / "team"
    team = ["-c", "user.name=Ada", "-c", "user.email=ada@example.org", "-C", str(work)]
    subprocess.run(["git", "clone", "-q", url, str(work)], check=True, capture_output=True)
    (work / "HUMAN.md").write_text("written by a person\n")
    for args in (["add", "HUMAN.md"], ["commit", "-qm", "notes"], ["push", "-q", "origin", "HEAD:main"]):
        subprocess.run(["git", *team, *args], check=True, capture_output=True)

    project = regenerate(api_client, namespace, "billing", [inline_source({**FILES, "README.md": "# v2\n"})])
    second = wait_exported(api_client, namespace, "gl", project, timeout=90)["status"]

    show = ["git", *team, "show"]
    subprocess.run(["git", *team, "fetch", "-q", "origin", "main"], check=True, capture_output=True)
    assert subprocess.run([*show, "origin/main:HUMAN.md"], capture_output=True).stdout == (
        b"written by a person\n"
    ), "main keeps the team's commit"
    subprocess.run(["git", *team, "fetch", "-q", "origin", "projectgen/gl"], check=True, capture_output=True)
    assert subprocess.run([*show, "FETCH_HEAD:HUMAN.md"], capture_output=True, check=True).stdout == (
        b"written by a person\n"
    )
    assert (
        subprocess.run([*show, "FETCH_HEAD:README.md"], capture_output=True, check=True).stdout == b"# v2\n"
    )
    assert second["commitSha"] == first["commitSha"], "main holds no new commit of the export"
    assert second["pullRequest"]["state"] == "open" and second["pullRequest"]["conflictedFiles"] == []
    assert "pull request #1 open" in condition({"status": second}, "Ready")["message"]
    [mr] = gitlab.project("platform/services/billing-api")["merge_requests"]
    assert (mr["source_branch"], mr["target_branch"]) == ("projectgen/gl", "main")
    assert_no_leak(api_client, namespace, ["gl"], operator)


@pytest.mark.parametrize(
    ("case", "prepare", "expected"),
    [
        ("bad-token", lambda f: f.tokens.clear(), "token was refused"),
        ("owner-missing", None, "'ghost' not found"),
        (
            "exists-not-ours",
            lambda f: f.add_repo("octocat/billing-api"),
            "already exists and was not created by this export",
        ),
        ("forbidden", lambda f: f.fail_next("POST", "/user/repos", status=403, times=10), "403"),
        ("unprocessable", lambda f: f.fail_next("POST", "/user/repos", status=422, times=10), "422"),
    ],
)
def test_permanent_errors_fail_with_a_clear_message(
    api_client: client.ApiClient,
    namespace: str,
    github: FakeGitHub,
    operator: OperatorProcess,
    case: str,
    prepare: Any,
    expected: str,
) -> None:
    make_project(api_client, namespace)
    secret(api_client, namespace)
    if prepare:
        prepare(github)
    extra = {"owner": "ghost"} if case == "owner-missing" else {}
    create(api_client, EXPORTS, namespace, publish_body("gh", "github", github.api_url, **extra))
    obj = finished(api_client, namespace, "gh")
    assert obj["status"]["phase"] == "Failed"
    assert expected in obj["status"]["errorMessage"], obj["status"]["errorMessage"]
    assert condition(obj, "Stalled")["status"] == "True"
    wait_event(api_client, namespace, "gh", lambda e: e.type == "Warning" and expected in (e.message or ""))
    if case != "exists-not-ours":
        assert github.created == []
    assert_no_leak(api_client, namespace, ["gh"], operator)


def _app_secret(api: client.ApiClient, namespace: str, private_key: str) -> None:
    body = client.V1Secret(
        metadata=client.V1ObjectMeta(name="git-token"),
        string_data={"appId": str(APP_ID), "privateKey": private_key},
    )
    client.CoreV1Api(api).create_namespaced_secret(namespace, body)


def _rsa_pem() -> tuple[str, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return private, key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_github_app_publish_with_the_installation_found_for_the_owner(
    api_client: client.ApiClient,
    namespace: str,
    github: FakeGitHub,
    operator: OperatorProcess,
    tmp_path: Path,
) -> None:
    """The Secret holds an app ID and key only: the operator finds the app's installation on
    `acme`, mints an installation token, creates the repository and pushes with that token;
    the key, the token and the JWTs appear nowhere. A key GitHub would not take fails clearly."""
    private, public = _rsa_pem()
    github.add_app(APP_ID, public)
    github.install_app(APP_ID, "acme")
    project = make_project(api_client, namespace)
    _app_secret(api_client, namespace, private)
    create(
        api_client,
        EXPORTS,
        namespace,
        publish_body("app", "github", github.api_url, owner="acme", githubApp={}),
    )

    obj = finished(api_client, namespace, "app")
    status = obj["status"]
    assert status["phase"] == "Completed", status
    assert github.created == ["acme/billing-api"] and status["repository"] == "acme/billing-api"
    assert github.count("GET", "/orgs/acme/installation") >= 1
    assert github.count("GET", "/user") == 0
    issued = github.issued_tokens()
    assert issued
    tree = clone(github.git.url("acme/billing-api"), tmp_path / "clone", "x-access-token", issued[-1])
    assert tree == expected_tree(project)

    # Another export whose Secret holds a damaged key: Failed, with a message and an Event.
    client.CoreV1Api(api_client).create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="bad-app"),
            string_data={"appId": str(APP_ID), "privateKey": private[:200], "installationId": "1"},
        ),
    )
    body = publish_body("bad", "github", github.api_url, owner="acme", githubApp={})
    body["spec"]["config"]["credentialsSecretRef"] = {"name": "bad-app"}
    body["spec"]["repositoryName"] = "other"
    create(api_client, EXPORTS, namespace, body)
    failed = wait_phase(api_client, EXPORTS, namespace, "bad", "Failed", timeout=60)["status"]
    assert "not an unencrypted PEM RSA private key" in failed["errorMessage"], failed
    wait_event(api_client, namespace, "bad", lambda e: e.type == "Warning" and "PEM" in (e.message or ""))

    forms = [*private_key_forms(private), *private_key_forms(private[:200])]
    for token in [*github.issued_tokens(), *github.jwts_seen]:
        forms += secret_forms(token)
    forms += [base64.b64encode(private.encode()).decode()]
    assert_no_leak(api_client, namespace, ["app", "bad"], operator, tuple(forms))


def test_missing_secret_fails_then_heals(
    api_client: client.ApiClient, namespace: str, github: FakeGitHub, operator: OperatorProcess
) -> None:
    make_project(api_client, namespace)
    create(api_client, EXPORTS, namespace, publish_body("gh", "github", github.api_url))
    obj = wait_phase(api_client, EXPORTS, namespace, "gh", "Failed", timeout=60)
    assert "Secret 'git-token' not found" in obj["status"]["errorMessage"]
    secret(api_client, namespace, key="wrong-key")
    status = wait_for(
        api_client,
        EXPORTS,
        namespace,
        "gh",
        lambda o: "has no key 'token'" in ((o.get("status") or {}).get("errorMessage") or ""),
        timeout=120,
        what="failing for the missing key",
    )["status"]
    assert status["phase"] == "Failed", status
    client.CoreV1Api(api_client).patch_namespaced_secret(
        "git-token", namespace, {"stringData": {"token": TOKEN}}
    )
    obj = wait_phase(api_client, EXPORTS, namespace, "gh", "Completed", timeout=180)
    assert github.created == ["octocat/billing-api"]
    assert_no_leak(api_client, namespace, ["gh"], operator)


def test_temporary_errors_are_retried(
    api_client: client.ApiClient, namespace: str, github: FakeGitHub, operator: OperatorProcess
) -> None:
    make_project(api_client, namespace)
    secret(api_client, namespace)
    github.fail_next("POST", "/user/repos", status=500, times=1)
    github.fail_next("GET", "/user", status=429, headers={"Retry-After": "1"}, times=1)
    create(api_client, EXPORTS, namespace, publish_body("gh", "github", github.api_url))
    assert finished(api_client, namespace, "gh")["status"]["phase"] == "Completed"
    assert github.unserved_faults() == []
    assert github.created == ["octocat/billing-api"]


def test_restart_between_create_and_push_creates_one_repository(
    api_client: client.ApiClient, solo_namespace: str, control_plane: Any, github: FakeGitHub, tmp_path: Path
) -> None:
    namespace = solo_namespace
    data, log = tmp_path / "data", tmp_path / "operator.log"
    github.git.fail_next(503, match="git-receive-pack", times=1000)  # pushes fail until we say so
    op = OperatorProcess(control_plane.kubeconfig, data, log, namespaces=(namespace,)).start()
    try:
        make_project(api_client, namespace)
        secret(api_client, namespace)
        create(api_client, EXPORTS, namespace, publish_body("gh", "github", github.api_url))
        wait_for(
            api_client,
            EXPORTS,
            namespace,
            "gh",
            lambda o: bool((o.get("status") or {}).get("repository")),
            timeout=60,
        )
        deadline = time.monotonic() + 60
        while not github.created and time.monotonic() < deadline:
            time.sleep(0.2)
        assert github.created == ["octocat/billing-api"]
    finally:
        op.kill()
    github.git.clear_faults()
    with OperatorProcess(control_plane.kubeconfig, data, log, namespaces=(namespace,)) as op2:
        status = wait_phase(api_client, EXPORTS, namespace, "gh", "Completed", timeout=180)["status"]
        assert github.created == ["octocat/billing-api"]
        assert status["commitSha"]
        assert_no_leak(api_client, namespace, ["gh"], op2)


def test_restart_after_the_create_call_leaves_one_pull_request(
    api_client: client.ApiClient, solo_namespace: str, control_plane: Any, github: FakeGitHub, tmp_path: Path
) -> None:
    """Issue 23: the operator dies after GitHub created the request but before status says so."""
    namespace = solo_namespace
    data, log = tmp_path / "data", tmp_path / "operator.log"
    full = "octocat/billing-api"
    op = OperatorProcess(control_plane.kubeconfig, data, log, namespaces=(namespace,)).start()
    try:
        make_project(api_client, namespace)
        secret(api_client, namespace)
        create(api_client, EXPORTS, namespace, publish_body("gh", "github", github.api_url))
        assert finished(api_client, namespace, "gh")["status"]["phase"] == "Completed"
        work = tmp_path / "team"
        team = ["-c", "user.name=Ada", "-c", "user.email=ada@example.org", "-C", str(work)]
        subprocess.run(["git", "clone", "-q", str(github.git.repo_path(full)), str(work)], check=True)
        (work / "HUMAN.md").write_text("mine\n")
        for args in (["add", "HUMAN.md"], ["commit", "-qm", "notes"], ["push", "-q", "origin", "HEAD:main"]):
            subprocess.run(["git", *team, *args], check=True, capture_output=True)
        # The create call works but its answer is lost, and the request cannot be listed afterwards.
        github.fail_next("GET", "/repos/*/pulls", status=None, times=1)
        github.fail_next("GET", "/repos/*/pulls", status=503, times=1000)
        github.fail_next("POST", "/repos/*/pulls", status=502, after=True, times=1000)
        regenerate(api_client, namespace, "billing", [inline_source({**FILES, "README.md": "# v2\n"})])
        deadline = time.monotonic() + 90
        while not github.pulls.get(full) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(github.pulls[full]) == 1
    finally:
        op.kill()
    github.clear_faults()
    with OperatorProcess(control_plane.kubeconfig, data, log, namespaces=(namespace,)) as op2:
        status = wait_for(
            api_client,
            EXPORTS,
            namespace,
            "gh",
            lambda o: bool((o.get("status") or {}).get("pullRequest")),
            timeout=180,
        )["status"]
        assert status["pullRequest"]["number"] == 1 and status["pullRequest"]["state"] == "open"
        assert [pr["number"] for pr in github.pulls[full]] == [1]
        assert_no_leak(api_client, namespace, ["gh"], op2)


@pytest.fixture
def gitea(gitea_server: GiteaServer) -> tuple[GiteaServer, GiteaUser, GiteaUser, str]:
    """The session's real Gitea with a fresh owner, another user and an organisation."""
    n = secrets.token_hex(3)
    owner, other = gitea_server.create_user(f"dev{n}"), gitea_server.create_user(f"guest{n}")
    gitea_server.create_org(f"team{n}", owner=owner)
    return gitea_server, owner, other, f"team{n}"


def test_gitea_publish_through_the_operator_and_repush_after_regeneration(
    api_client: client.ApiClient,
    namespace: str,
    gitea: tuple[GiteaServer, GiteaUser, GiteaUser, str],
    operator: OperatorProcess,
    tmp_path: Path,
) -> None:
    server, owner, other, org = gitea
    forms = tuple(secret_forms(owner.token))
    project = make_project(api_client, namespace)
    secret(api_client, namespace, value=owner.token)
    body = publish_body(
        "gt",
        "gitea",
        server.url,
        owner=org,
        description="Billing API",
        topics=["billing"],
        defaultBranch="trunk",
    )
    body["spec"]["update"] = {"strategy": "Push"}  # nobody works in it: the update goes on top
    create(api_client, EXPORTS, namespace, body)
    obj = finished(api_client, namespace, "gt")
    first = obj["status"]
    full = f"{org}/billing-api"
    assert first["phase"] == "Completed", first
    assert first["repository"] == full and first["repositoryUrl"] == f"{server.url}/{full}"
    assert clone(f"{server.url}/{full}.git", tmp_path / "c1", owner.name, owner.token) == expected_tree(
        project
    )
    status, repo = server.api("GET", f"/repos/{full}", token=owner.token)
    assert status == 200 and repo["private"] is True and repo["default_branch"] == "trunk"
    assert repo["description"] == "Billing API"
    assert server.api("GET", f"/repos/{full}", token=other.token)[0] == 404  # private: not for others
    project = regenerate(api_client, namespace, "billing", [inline_source({"README.md": "# v2\n"})])
    second = wait_exported(api_client, namespace, "gt", project, timeout=90)["status"]
    assert second["commitSha"] != first["commitSha"]
    status, commit = server.api("GET", f"/repos/{full}/git/commits/{second['commitSha']}", token=owner.token)
    assert status == 200 and [p["sha"] for p in commit["parents"]] == [first["commitSha"]]
    assert_no_leak(api_client, namespace, ["gt"], operator, forms)


def test_gitea_existing_repository_fails_with_a_clear_message(
    api_client: client.ApiClient,
    namespace: str,
    gitea: tuple[GiteaServer, GiteaUser, GiteaUser, str],
    operator: OperatorProcess,
) -> None:
    server, owner, _, org = gitea
    server.create_repo(org, "billing-api", token=owner.token)
    make_project(api_client, namespace)
    secret(api_client, namespace, value=owner.token)
    create(api_client, EXPORTS, namespace, publish_body("gt", "gitea", server.url, owner=org))
    obj = finished(api_client, namespace, "gt")
    assert obj["status"]["phase"] == "Failed"
    assert "already exists and was not created by this export" in obj["status"]["errorMessage"]
    wait_event(
        api_client, namespace, "gt", lambda e: e.type == "Warning" and "already exists" in (e.message or "")
    )
    assert_no_leak(api_client, namespace, ["gt"], operator, tuple(secret_forms(owner.token)))


def _conflicted_requests(operator: OperatorProcess, *, at_least: int = 0, at_most: int | None = None) -> int:
    """projectgen_update_requests{state="conflicted"} of the session operator, once in range (the
    fleet series follow the watch events a moment after the status patch)."""
    deadline = time.monotonic() + 30
    while True:
        count = int(value(scrape(operator.metrics_port), "projectgen_update_requests", state="conflicted"))
        if (count >= at_least and (at_most is None or count <= at_most)) or time.monotonic() > deadline:
            return count
        time.sleep(0.2)


def test_gitea_updates_arrive_as_one_pull_request_that_keeps_the_team_work(
    api_client: client.ApiClient,
    namespace: str,
    gitea: tuple[GiteaServer, GiteaUser, GiteaUser, str],
    operator: OperatorProcess,
) -> None:
    """Issue 23 through the operator: a team commit survives, a conflict gives a draft request with
    markers and the label, and a newer render updates the same request."""
    server, owner, _other, org = gitea
    forms = tuple(secret_forms(owner.token))
    make_project(api_client, namespace)
    secret(api_client, namespace, value=owner.token)
    create(api_client, EXPORTS, namespace, publish_body("gt", "gitea", server.url, owner=org))
    first = finished(api_client, namespace, "gt")["status"]
    assert first["phase"] == "Completed", first
    full = f"{org}/billing-api"

    def contents(path: str, ref: str) -> tuple[int, Any]:
        return server.api("GET", f"/repos/{full}/contents/{path}?ref={ref}", token=owner.token)

    deadline = time.monotonic() + 30
    while contents("README.md", "main")[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.2)  # Gitea records a push asynchronously
    readme = contents("README.md", "main")[1]
    for path, data, sha in (
        ("HUMAN.md", b"written by a person\n", None),
        ("README.md", b"# Team\n", readme["sha"]),
    ):
        body = {"content": base64.b64encode(data).decode(), "message": f"team: {path}", "branch": "main"}
        if sha:
            body["sha"] = sha
        status, answer = server.api(
            "PUT" if sha else "POST", f"/repos/{full}/contents/{path}", token=owner.token, body=body
        )
        assert status in (200, 201), answer

    project = regenerate(api_client, namespace, "billing", [inline_source({**FILES, "README.md": "# v2\n"})])
    second = wait_exported(api_client, namespace, "gt", project, timeout=90)["status"]
    request = second["pullRequest"]
    assert request["state"] == "open" and request["conflictedFiles"] == ["README.md"]
    # the ages the fleet metrics and the UpdateRequestConflicted alert count from
    assert request["openedAt"] and request["conflictedSince"], request
    conflicted = _conflicted_requests(operator, at_least=1)
    assert conflicted >= 1  # the fleet view counts it
    status, pr = server.api("GET", f"/repos/{full}/pulls/{request['number']}", token=owner.token)
    assert status == 200 and pr["title"].startswith("WIP:") and pr["html_url"] == request["url"]
    assert [label["name"] for label in pr["labels"]] == ["projectgen-conflicts"]
    assert base64.b64decode(contents("HUMAN.md", "projectgen/gt")[1]["content"]) == b"written by a person\n"
    assert b">>>>>>> after updating" in base64.b64decode(contents("README.md", "projectgen/gt")[1]["content"])
    assert base64.b64decode(contents("README.md", "main")[1]["content"]) == b"# Team\n"
    assert f"#{request['number']} open, 1 conflicts" in condition({"status": second}, "Ready")["message"]
    assert second["deliveredContentHash"] == first["exportedContentHash"]

    project = regenerate(
        api_client,
        namespace,
        "billing",
        [inline_source({**FILES, "README.md": "# Team\n", "NEW.md": "new\n"})],
    )
    third = wait_exported(api_client, namespace, "gt", project, timeout=90)["status"]
    assert (
        third["pullRequest"]["number"] == request["number"] and third["pullRequest"]["conflictedFiles"] == []
    )
    assert third["pullRequest"]["openedAt"] == request["openedAt"], "the same request: opened when it was"
    assert "conflictedSince" not in third["pullRequest"], "conflicts resolved: no longer conflicted"
    assert _conflicted_requests(operator, at_most=conflicted - 1) == conflicted - 1  # the fleet view
    status, pulls = server.api("GET", f"/repos/{full}/pulls?state=all", token=owner.token)
    assert status == 200 and [p["number"] for p in pulls] == [request["number"]]
    assert not pulls[0]["title"].startswith("WIP:") and pulls[0]["labels"] == []
    assert_no_leak(api_client, namespace, ["gt"], operator, forms)
