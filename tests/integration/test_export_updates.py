"""Day two on a real Gitea, through the operator on the real control plane: what happens to the
export's request after a person acts on it (merges, squashes, closes it), and a Push that finds
the branch moved."""

from __future__ import annotations

import base64
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from support import (
    EXPORTS,
    PROJECTS,
    OperatorProcess,
    condition,
    create,
    custom,
    get,
    inline_source,
    project_body,
    regenerate,
    wait_event,
    wait_exported,
    wait_for,
    wait_phase,
)
from test_export_publish import (
    FILES,
    GROUP,
    VERSION,
    assert_no_leak,
    finished,
    gitea,
    make_project,
    publish_body,
    secret,
)
from test_generatedproject import configmap
from test_template_follow import INTERVAL, git_server, on_tag, released, template_source

from projectgen.export.publish import secret_forms
from projectgen_dev.gitea import GiteaServer, GiteaUser
from projectgen_dev.gitserver import GitHTTPServer, tree_entries

__all__ = ["git_server", "gitea"]  # the fixtures, shared with test_template_follow and test_export_publish


class Repo:
    """The published repository as a person sees it through Gitea's API."""

    def __init__(self, server: GiteaServer, owner: GiteaUser, full: str) -> None:
        self.server, self.token, self.full = server, owner.token, full

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return self.server.api(method, f"/repos/{self.full}{path}", token=self.token, body=body)

    def until(self, what: str, call: Any, timeout: float = 30) -> Any:
        """Gitea records pushes and checks pull requests asynchronously: poll until it answers."""
        deadline = time.monotonic() + timeout
        while True:
            status, answer = call()
            if 200 <= status < 300 or time.monotonic() > deadline:
                assert 200 <= status < 300, f"{what}: {status} {answer}"
                return answer
            time.sleep(0.2)

    def read(self, path: str, ref: str) -> bytes:
        answer = self.until(f"read {path}@{ref}", lambda: self.api("GET", f"/contents/{path}?ref={ref}"))
        return base64.b64decode(answer["content"])

    def write(self, path: str, data: bytes) -> None:
        """A team member's commit on main (through the web editor's API)."""
        status, old = self.api("GET", f"/contents/{path}?ref=main")
        body = {"content": base64.b64encode(data).decode(), "message": f"team: {path}", "branch": "main"}
        if status == 200:
            body["sha"] = old["sha"]
        self.until(
            f"write {path}", lambda: self.api("PUT" if status == 200 else "POST", f"/contents/{path}", body)
        )

    def pulls(self) -> list[dict[str, Any]]:
        answer: list[dict[str, Any]] = self.until("list pulls", lambda: self.api("GET", "/pulls?state=all"))
        return sorted(answer, key=lambda p: p["number"])

    def merge(self, number: int, how: str) -> None:
        """Merge as a person does in the web UI (405 while Gitea still checks the request)."""
        self.until(f"merge #{number}", lambda: self.api("POST", f"/pulls/{number}/merge", {"Do": how}))

    def close(self, number: int) -> None:
        self.until(f"close #{number}", lambda: self.api("PATCH", f"/pulls/{number}", {"state": "closed"}))


def _start(
    api: client.ApiClient, namespace: str, gitea: tuple[GiteaServer, GiteaUser, GiteaUser, str], **spec: Any
) -> tuple[Repo, dict[str, Any]]:
    server, owner, _other, org = gitea
    make_project(api, namespace)
    secret(api, namespace, value=owner.token)
    body = publish_body("gt", "gitea", server.url, owner=org)
    body["spec"].update(spec)
    create(api, EXPORTS, namespace, body)
    first = finished(api, namespace, "gt")["status"]
    assert first["phase"] == "Completed" and first.get("pullRequest") is None, first
    repo = Repo(server, owner, f"{org}/billing-api")
    repo.read("README.md", "main")  # Gitea has recorded the first push
    return repo, first


def _render(api: client.ApiClient, namespace: str, files: dict[str, str]) -> dict[str, Any]:
    project = regenerate(api, namespace, "billing", [inline_source({**FILES, **files})])
    status: dict[str, Any] = wait_exported(api, namespace, "gt", project)["status"]
    return status


@pytest.mark.parametrize("how", ["merge", "squash"])
def test_a_merged_request_then_a_render_opens_a_fresh_one_based_on_the_merged_state(
    api_client: client.ApiClient,
    namespace: str,
    gitea: tuple[GiteaServer, GiteaUser, GiteaUser, str],
    operator: OperatorProcess,
    how: str,
) -> None:
    """After a merge (a squash too) the next update's base is what the merged request delivered: the
    template's second change to app.py applies cleanly instead of conflicting with its first."""
    repo, _first = _start(api_client, namespace, gitea)
    repo.write("README.md", b"# Team\n")
    second = _render(api_client, namespace, {"src/billing/app.py": "print('v2')\n"})
    number = second["pullRequest"]["number"]
    assert second["pullRequest"]["state"] == "open" and second["pullRequest"]["conflictedFiles"] == []
    repo.merge(number, how)
    assert repo.read("src/billing/app.py", "main") == b"print('v2')\n"

    third = _render(api_client, namespace, {"src/billing/app.py": "print('v3')\n"})

    request = third["pullRequest"]
    assert request["number"] != number and request["state"] == "open", third
    assert request["conflictedFiles"] == [], "the merged render is the base: no spurious conflict"
    assert [(p["number"], p["merged"]) for p in repo.pulls()] == [(number, True), (request["number"], False)]
    assert repo.read("src/billing/app.py", "projectgen/gt") == b"print('v3')\n"
    assert repo.read("README.md", "projectgen/gt") == b"# Team\n"
    assert third["deliveredContentHash"] == second["exportedContentHash"], "main holds the merged render"
    assert_no_leak(api_client, namespace, ["gt"], operator, tuple(secret_forms(repo.token)))


def test_a_closed_request_is_not_reopened_for_the_same_render(
    api_client: client.ApiClient,
    namespace: str,
    gitea: tuple[GiteaServer, GiteaUser, GiteaUser, str],
    operator: OperatorProcess,
) -> None:
    """A person declined the update: the same render does not come back; a new one does."""
    repo, _first = _start(api_client, namespace, gitea)
    second = _render(api_client, namespace, {"README.md": "# v2\n"})
    number = second["pullRequest"]["number"]
    repo.close(number)

    # A spec change makes the export deliver the same render again.
    custom(api_client).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, EXPORTS, "gt", {"spec": {"config": {"commitMessage": "again"}}}
    )
    again = wait_phase(api_client, EXPORTS, namespace, "gt", "Completed", "Failed", timeout=90)["status"]
    assert again["phase"] == "Completed", again
    assert again["pullRequest"]["number"] == number and again["pullRequest"]["state"] == "closed"
    assert [(p["number"], p["state"]) for p in repo.pulls()] == [(number, "closed")]

    third = _render(api_client, namespace, {"README.md": "# v3\n"})

    assert third["pullRequest"]["state"] == "open" and third["pullRequest"]["number"] != number
    assert [p["state"] for p in repo.pulls()] == ["closed", "open"]
    assert repo.read("README.md", "projectgen/gt") == b"# v3\n"


def test_push_falls_back_to_a_request_when_the_branch_moved(
    api_client: client.ApiClient,
    namespace: str,
    gitea: tuple[GiteaServer, GiteaUser, GiteaUser, str],
    operator: OperatorProcess,
) -> None:
    """strategy Push with a team commit on main since the export's last one: no push onto their
    work unseen; a request, and status and an Event say why."""
    repo, first = _start(api_client, namespace, gitea, update={"strategy": "Push"})
    repo.write("HUMAN.md", b"written by a person\n")
    team_head = repo.until("branch", lambda: repo.api("GET", "/branches/main"))["commit"]["id"]

    second = _render(api_client, namespace, {"README.md": "# v2\n"})

    assert second["pullRequest"]["state"] == "open", second
    assert second["commitSha"] == first["commitSha"], "main holds no new commit of the export"
    assert repo.until("branch", lambda: repo.api("GET", "/branches/main"))["commit"]["id"] == team_head
    assert repo.read("README.md", "projectgen/gt") == b"# v2\n"
    assert repo.read("HUMAN.md", "projectgen/gt") == b"written by a person\n"
    assert "the branch moved" in condition({"status": second}, "Ready")["message"]
    wait_event(
        api_client,
        namespace,
        "gt",
        lambda e: e.type == "Warning" and e.reason == "PushDeclined" and "branch moved" in (e.message or ""),
    )


def test_the_templates_skip_if_exists_files_are_the_teams_after_the_first_delivery(
    api_client: client.ApiClient,
    namespace: str,
    gitea: tuple[GiteaServer, GiteaUser, GiteaUser, str],
    operator: OperatorProcess,
) -> None:
    """copier's `_skip_if_exists`: the template seeds `.env`, then the team owns it; a template that
    changes it later changes nothing there (no conflict), while its other changes arrive."""
    server, owner, _other, org = gitea

    def template(name: str, env: str, readme: str) -> dict[str, Any]:
        configmap(
            api_client,
            namespace,
            name,
            {"copier": "_skip_if_exists: ['.env']\n", "env": env, "readme": readme},
        )
        items = [
            {"key": "copier", "path": "copier.yml"},
            {"key": "env", "path": ".env"},
            {"key": "readme", "path": "README.md"},
        ]
        return {"template": {"configMap": {"name": name, "items": items}}}

    create(
        api_client, PROJECTS, namespace, project_body("billing", [template("tpl1", "DEBUG=0\n", "# v1\n")])
    )
    wait_phase(api_client, PROJECTS, namespace, "billing", "Completed", timeout=60)
    secret(api_client, namespace, value=owner.token)
    create(api_client, EXPORTS, namespace, publish_body("gt", "gitea", server.url, owner=org))
    assert finished(api_client, namespace, "gt")["status"]["phase"] == "Completed"
    repo = Repo(server, owner, f"{org}/billing-api")
    assert repo.read(".env", "main") == b"DEBUG=0\n", "the first delivery seeds it"
    repo.write(".env", b"DEBUG=1\nTOKEN_FILE=/run/mine\n")

    project = regenerate(api_client, namespace, "billing", [template("tpl2", "DEBUG=false\n", "# v2\n")])
    second = wait_exported(api_client, namespace, "gt", project)["status"]

    assert second["pullRequest"]["state"] == "open" and second["pullRequest"]["conflictedFiles"] == [], second
    assert repo.read("README.md", "projectgen/gt") == b"# v2\n"
    assert repo.read(".env", "projectgen/gt") == b"DEBUG=1\nTOKEN_FILE=/run/mine\n"


def test_a_merge_on_the_forge_shows_in_status_without_touching_the_export(
    api_client: client.ApiClient,
    solo_namespace: str,
    control_plane: Any,
    gitea: tuple[GiteaServer, GiteaUser, GiteaUser, str],
    tmp_path: Path,
) -> None:
    """The open request is polled (PROJECTGEN_PULL_REQUEST_POLL_SECONDS): a person merges it on
    Gitea, and status, the Ready message and an Event say merged; nothing reconciles the export."""
    namespace = solo_namespace
    env = {"PROJECTGEN_PULL_REQUEST_POLL_SECONDS": "1"}
    with OperatorProcess(
        control_plane.kubeconfig,
        tmp_path / "data",
        tmp_path / "operator.log",
        namespaces=(namespace,),
        env=env,
    ) as op:
        repo, _first = _start(api_client, namespace, gitea)
        second = _render(api_client, namespace, {"README.md": "# v2\n"})
        number = second["pullRequest"]["number"]
        assert second["pullRequest"]["state"] == "open"
        generation = get(api_client, EXPORTS, namespace, "gt")["metadata"]["generation"]  # type: ignore[index]

        repo.merge(number, "merge")

        merged = wait_for(
            api_client,
            EXPORTS,
            namespace,
            "gt",
            lambda o: o["status"].get("pullRequest", {}).get("state") == "merged",
            timeout=60,
            what="showing the merge",
        )
        status = merged["status"]
        assert status["deliveredContentHash"] == second["exportedContentHash"]
        assert status["phase"] == "Completed" and merged["metadata"]["generation"] == generation
        assert condition(merged, "Ready")["message"].startswith(f"pull request #{number} merged")
        wait_event(api_client, namespace, "gt", lambda e: e.reason == "PullRequest" and "merged" in e.message)
        assert_no_leak(api_client, namespace, ["gt"], op, tuple(secret_forms(repo.token)))


def test_the_request_gets_the_configured_labels_and_assignees_and_a_refusal_is_a_warning(
    api_client: client.ApiClient,
    namespace: str,
    gitea: tuple[GiteaServer, GiteaUser, GiteaUser, str],
    operator: OperatorProcess,
) -> None:
    """config.pullRequest: labels and assignees land on the request; a reviewer Gitea refuses (no
    access to the private repository) is a Warning Event, and the export still completes."""
    _server, owner, other, _org = gitea
    people = {"labels": ["template-update"], "assignees": [owner.name], "reviewers": [other.name]}
    repo, _first = _start(api_client, namespace, gitea)
    custom(api_client).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, EXPORTS, "gt", {"spec": {"config": {"pullRequest": people}}}
    )
    wait_phase(api_client, EXPORTS, namespace, "gt", "Completed", timeout=90)

    second = _render(api_client, namespace, {"README.md": "# v2\n"})

    assert second["phase"] == "Completed" and second["pullRequest"]["state"] == "open", second
    [pr] = repo.pulls()
    assert [label["name"] for label in pr["labels"]] == ["template-update"]
    assert [user["login"] for user in pr["assignees"]] == [owner.name]
    wait_event(
        api_client,
        namespace,
        "gt",
        lambda e: e.type == "Warning" and "reviewers not set" in (e.message or ""),
    )


def test_a_config_path_delivery_into_an_existing_repository_leaves_its_other_files_byte_identical(
    api_client: client.ApiClient,
    namespace: str,
    gitea: tuple[GiteaServer, GiteaUser, GiteaUser, str],
    operator: OperatorProcess,
    tmp_path: Path,
) -> None:
    """A monorepo someone else made: ifExists PullRequest + config.path. The first render arrives as
    a request under services/billing; every other file, mode and link is the same object as on main."""
    server, owner, _other, org = gitea
    server.create_repo(org, "billing-api", token=owner.token)
    url = f"{server.url}/{org}/billing-api.git".replace("http://", f"http://{owner.name}:{owner.token}@")
    work = tmp_path / "mono"
    git = ["git", "-c", "user.name=Ada", "-c", "user.email=ada@example.org", "-C", str(work)]
    work.mkdir()
    for path, data in {
        "README.md": "# monorepo\n",
        "services/other/main.go": "package main\n",
        "services/billing-notes.txt": "not the project's\n",
        "bin/tool": "#!/bin/sh\necho tool\n",
    }.items():
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        (work / path).write_text(data)
    (work / "bin/tool").chmod(0o755)
    (work / "docs").symlink_to("services/other")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "monorepo"]):
        subprocess.run([*git, *args], check=True, capture_output=True)
    subprocess.run([*git, "push", "-q", url, "HEAD:main"], check=True, capture_output=True)
    before = tree_entries(work / ".git", "HEAD")
    main_head = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout

    project = make_project(api_client, namespace)
    secret(api_client, namespace, value=owner.token)
    body = publish_body("gt", "gitea", server.url, owner=org, ifExists="PullRequest", path="services/billing")
    create(api_client, EXPORTS, namespace, body)
    status = finished(api_client, namespace, "gt")["status"]

    assert status["phase"] == "Completed" and status["pullRequest"]["state"] == "open", status
    subprocess.run(
        [*git, "fetch", "-q", url, "main", "projectgen/gt:request"], check=True, capture_output=True
    )
    assert tree_entries(work / ".git", "FETCH_HEAD") == before, "main is untouched"
    branch = tree_entries(work / ".git", "request")
    assert {p: e for p, e in branch.items() if not p.startswith("services/billing/")} == before
    assert sorted(
        p.removeprefix("services/billing/") for p in branch if p.startswith("services/billing/")
    ) == (sorted(f["path"] for f in project["status"]["files"]))
    parent = subprocess.run(
        [*git, "rev-parse", "request^"], check=True, capture_output=True, text=True
    ).stdout
    assert parent == main_head, "the request's commit goes on top of main"


def test_a_template_that_moves_opens_a_request_naming_its_refs_from_and_to(
    api_client: client.ApiClient,
    solo_namespace: str,
    control_plane: Any,
    gitea: tuple[GiteaServer, GiteaUser, GiteaUser, str],
    git_server: GitHTTPServer,
    tmp_path: Path,
) -> None:
    """Tag v1.1.0 appears; the project that follows `>=1,<2` moves, and its export's request says
    which template version the branch had and which one it gets (a reviewer sees the bump)."""
    namespace = solo_namespace
    server, owner, _other, org = gitea
    tpl = released(git_server, f"bump-{namespace}", "v1.0.0")
    with OperatorProcess(
        control_plane.kubeconfig,
        tmp_path / "data",
        tmp_path / "operator.log",
        namespaces=(namespace,),
        env={"PROJECTGEN_TEMPLATE_MIN_INTERVAL": "1s"},
    ):
        source = template_source(tpl.url, ">=1,<2", updateInterval=INTERVAL)
        create(api_client, PROJECTS, namespace, project_body("billing", [source]))
        on_tag(api_client, namespace, "billing", "v1.0.0")
        secret(api_client, namespace, value=owner.token)
        body = publish_body("gt", "gitea", server.url, owner=org)
        body["spec"]["update"] = {"strategy": "PullRequest"}
        create(api_client, EXPORTS, namespace, body)
        assert finished(api_client, namespace, "gt")["status"]["phase"] == "Completed"
        repo = Repo(server, owner, f"{org}/billing-api")
        assert repo.read("VERSION", "main") == b"1.0.0\n"

        tpl.release("v1.1.0")
        project = on_tag(api_client, namespace, "billing", "v1.1.0")
        status = wait_exported(api_client, namespace, "gt", project)["status"]

        assert status["pullRequest"]["state"] == "open", status
        [pr] = repo.pulls()
        assert pr["number"] == status["pullRequest"]["number"]
        assert "template bump-" in pr["title"] and "v1.0.0 → v1.1.0" in pr["title"], pr["title"]
        assert f"Template `{tpl.url}` moved: `v1.0.0` → `v1.1.0`." in pr["body"].splitlines(), pr["body"]
        assert repo.read("VERSION", "projectgen/gt") == b"1.1.0\n"
