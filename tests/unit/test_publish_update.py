"""Day two over real git: a later render is merged with the team's work, never pushed over it.

The forge stand-ins serve their repositories with git's own smart-HTTP backend
(`projectgen_dev/gitserver.py`); a team member works in a real clone and pushes to it.
"""

from __future__ import annotations

import itertools
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conftest import _git_env
from projectgen.api.v1alpha1.repositoryexport import UpdateStrategy
from projectgen.export.publish import PublishResult, read_request
from projectgen.export.update.record import TemplateRef
from projectgen_dev.fakehosts import FakeGitHub, FakeGitLab
from projectgen_dev.gitserver import tree_entries

if TYPE_CHECKING:
    from conftest import HostEnv, Project

BRANCH = "refs/heads/projectgen/demo"
_n = itertools.count()


class Team:
    """A person with a clone of the published repository."""

    def __init__(self, env: HostEnv, full_name: str) -> None:
        self.env = env
        self.full_name = full_name
        self.work = env.scratch / f"team-{next(_n)}"
        self.run_env = {
            **_git_env(env.scratch),
            "GIT_AUTHOR_NAME": "Ada",
            "GIT_AUTHOR_EMAIL": "ada@example.org",
            "GIT_COMMITTER_NAME": "Ada",
            "GIT_COMMITTER_EMAIL": "ada@example.org",
        }
        self.git("clone", "--quiet", str(env.bare(full_name)), str(self.work), cwd=env.scratch)

    def git(self, *args: str, cwd: Path | None = None) -> str:
        out = subprocess.run(
            ["git", *args], cwd=cwd or self.work, env=self.run_env, capture_output=True, check=True
        )
        return out.stdout.decode().strip()

    def commit(self, files: dict[str, bytes | None], message: str = "team work") -> str:
        self.git("pull", "--quiet", "--ff-only")
        for path, data in files.items():
            target = self.work / path
            if data is None:
                target.unlink()
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
        self.git("add", "-A")
        self.git("commit", "--quiet", "-m", message)
        self.git("push", "--quiet", "origin", "HEAD:main")
        return self.git("rev-parse", "HEAD")


def file_at(env: HostEnv, full_name: str, ref: str, path: str) -> bytes:
    out = subprocess.run(
        ["git", "cat-file", "blob", f"{ref}:{path}"],
        env={**_git_env(env.scratch), "GIT_DIR": str(env.bare(full_name))},
        capture_output=True,
        check=True,
    )
    return out.stdout


def paths_at(env: HostEnv, full_name: str, ref: str) -> set[str]:
    return set(env.git(full_name, "ls-tree", "-r", "--name-only", ref).splitlines())


def head(env: HostEnv, full_name: str, ref: str = "refs/heads/main") -> str:
    return env.git(full_name, "rev-parse", ref).strip()


def publish_first(env: HostEnv, project: Project) -> tuple[str, PublishResult]:
    return publish_first_with(env, project)


def publish_first_with(env: HostEnv, project: Project, **overrides: Any) -> tuple[str, PublishResult]:
    first = env.run(env.request(project, **overrides))
    assert first.action == "First" and first.pushed
    return env.claims[-1], first


def test_a_team_commit_survives_an_update(env: HostEnv, project: Project) -> None:
    repo, first = publish_first(env, project)
    team = Team(env, repo)
    team_head = team.commit({"HUMAN.md": b"written by a person\n"})

    project.write("README.md", b"# demo v2\n")
    second = env.run(env.request(project, claimed=repo, delivered_commit=first.commit_sha))

    assert second.action == "PullRequest" and second.request_branch == "projectgen/demo"
    assert head(env, repo) == team_head, "the target branch is not touched by a request"
    assert file_at(env, repo, BRANCH, "HUMAN.md") == b"written by a person\n"
    assert file_at(env, repo, BRANCH, "README.md") == b"# demo v2\n"
    assert head(env, repo, f"{BRANCH}^") == team_head, "the merge sits on top of the branch head"
    assert second.conflicts == []


def test_push_goes_on_top_and_keeps_what_the_team_did_before(gh: HostEnv, project: Project) -> None:
    repo, first = publish_first(gh, project)
    project.write("README.md", b"# demo v2\n")
    second = gh.run(gh.request(project, claimed=repo, delivered_commit=first.commit_sha))
    team_head = Team(gh, repo).commit({"HUMAN.md": b"mine\n"}, "merge the update")
    # The team merged the request themselves; the export's next commit records the branch head.
    assert second.action == "PullRequest"

    project.write("src/demo/__init__.py", b"VERSION = '3.0'\n")
    third = gh.run(
        gh.request(project, claimed=repo, update_strategy=UpdateStrategy.PUSH, delivered_commit=team_head)
    )

    assert third.action == "Push" and third.pushed
    assert head(gh, repo, "refs/heads/main^") == team_head, "a fast-forward: nothing force-pushed"
    assert file_at(gh, repo, "main", "HUMAN.md") == b"mine\n"
    assert file_at(gh, repo, "main", "src/demo/__init__.py") == b"VERSION = '3.0'\n"


def test_push_falls_back_to_a_request_when_the_branch_moved(gh: HostEnv, project: Project) -> None:
    repo, first = publish_first(gh, project)
    team_head = Team(gh, repo).commit({"HUMAN.md": b"mine\n"})

    project.write("README.md", b"# demo v2\n")
    second = gh.run(
        gh.request(
            project, claimed=repo, update_strategy=UpdateStrategy.PUSH, delivered_commit=first.commit_sha
        )
    )

    assert second.action == "PullRequest" and "moved" in second.reason
    assert head(gh, repo) == team_head
    assert file_at(gh, repo, BRANCH, "HUMAN.md") == b"mine\n"


def test_a_push_whose_status_was_lost_does_not_turn_the_next_into_a_request(
    gh: HostEnv, project: Project
) -> None:
    """A crash between the push and the status write: status still names the first commit, but
    the branch head is the export's own last push, so the next Push goes on top."""
    repo, first = publish_first(gh, project)
    project.write("README.md", b"# demo v2\n")
    push = {"claimed": repo, "update_strategy": UpdateStrategy.PUSH, "delivered_commit": first.commit_sha}
    second = gh.run(gh.request(project, **push))
    assert second.action == "Push" and head(gh, repo) == second.commit_sha

    project.write("README.md", b"# demo v3\n")
    third = gh.run(gh.request(project, **push))  # status was never told about `second`

    assert third.action == "Push", third.reason
    assert head(gh, repo, "refs/heads/main^") == second.commit_sha
    assert file_at(gh, repo, "main", "README.md") == b"# demo v3\n"


def test_the_same_render_after_a_lost_status_records_the_export_s_own_push(
    gh: HostEnv, project: Project
) -> None:
    """The push landed, status was never written; the retry of the same render pushes nothing and
    names the branch head (the export's own commit), so status and the branch agree again."""
    repo, first = publish_first(gh, project)
    project.write("README.md", b"# demo v2\n")
    push = {"claimed": repo, "update_strategy": UpdateStrategy.PUSH, "delivered_commit": first.commit_sha}
    second = gh.run(gh.request(project, **push))
    retry = gh.run(gh.request(project, **push))

    assert retry.action == "Nothing" and not retry.pushed
    assert retry.commit_sha == second.commit_sha == head(gh, repo)


def test_the_same_lines_changed_give_markers_and_the_file_is_listed(gh: HostEnv, project: Project) -> None:
    repo, first = publish_first(gh, project)
    Team(gh, repo).commit({"README.md": b"# demo by the team\n"})

    project.write("README.md", b"# demo by the template\n")
    second = gh.run(gh.request(project, claimed=repo, delivered_commit=first.commit_sha))

    assert second.conflicts == ["README.md (content)"]
    assert file_at(gh, repo, BRANCH, "README.md") == (
        b"<<<<<<< before updating\n# demo by the team\n=======\n# demo by the template\n>>>>>>> after updating\n"
    )


def test_a_second_render_updates_the_same_branch_and_a_repeat_pushes_nothing(
    gh: HostEnv, project: Project
) -> None:
    repo, first = publish_first(gh, project)
    team_head = Team(gh, repo).commit({"HUMAN.md": b"mine\n"})
    project.write("README.md", b"# demo v2\n")
    gh.run(gh.request(project, claimed=repo, delivered_commit=first.commit_sha))

    project.write("README.md", b"# demo v3\n")
    third = gh.run(gh.request(project, claimed=repo, delivered_commit=first.commit_sha))
    again = gh.run(gh.request(project, claimed=repo, delivered_commit=first.commit_sha))

    heads = gh.git(repo, "for-each-ref", "--format=%(refname)", "refs/heads").split()
    assert heads == ["refs/heads/main", BRANCH]
    assert file_at(gh, repo, BRANCH, "README.md") == b"# demo v3\n"
    assert head(gh, repo, f"{BRANCH}^") == team_head
    assert third.request_head == again.request_head == head(gh, repo, BRANCH)


def test_a_squash_merge_then_a_render_gives_no_spurious_conflict(gh: HostEnv, project: Project) -> None:
    repo, first = publish_first(gh, project)
    team = Team(gh, repo)
    team.commit({"README.md": b"# demo, the team's\n"})
    project.write("src/demo/__init__.py", b"VERSION = '2.0'\n")
    second = gh.run(gh.request(project, claimed=repo, delivered_commit=first.commit_sha))
    merged = project.manifest.content_hash
    # Squash merge: one new commit on main with the request's tree, the request's commit unreachable.
    team.git("fetch", "--quiet", "origin", "projectgen/demo")
    squashed = team.git("commit-tree", "FETCH_HEAD^{tree}", "-p", "HEAD", "-m", "Template update (#1)")
    team.git("push", "--quiet", "origin", f"{squashed}:refs/heads/main")
    gh.git(repo, "update-ref", "-d", BRANCH)  # forges delete the merged branch
    assert second.action == "PullRequest"

    project.write("src/demo/__init__.py", b"VERSION = '3.0'\n")
    third = gh.run(
        gh.request(project, claimed=repo, delivered_commit=first.commit_sha, merged_content_hash=merged)
    )

    assert third.conflicts == [], "the base is what the merged request delivered, not the first render"
    assert file_at(gh, repo, BRANCH, "src/demo/__init__.py") == b"VERSION = '3.0'\n"
    assert file_at(gh, repo, BRANCH, "README.md") == b"# demo, the team's\n"


def test_a_force_pushed_history_keeps_the_base(gh: HostEnv, project: Project) -> None:
    repo, first = publish_first(gh, project)
    team = Team(gh, repo)
    team.commit({"HUMAN.md": b"mine\n", "README.md": b"# demo\n\nmore\n"})
    # The team rewrites main into one fresh commit: the export's commit is no longer in the history.
    orphan = team.git("commit-tree", "HEAD^{tree}", "-m", "squash history")
    team.git("push", "--quiet", "--force", "origin", f"{orphan}:refs/heads/main")

    project.write("src/demo/__init__.py", b"VERSION = '2.0'\n")
    second = gh.run(gh.request(project, claimed=repo, delivered_commit=first.commit_sha))

    assert second.conflicts == []
    assert file_at(gh, repo, BRANCH, "README.md") == b"# demo\n\nmore\n"
    assert file_at(gh, repo, BRANCH, "src/demo/__init__.py") == b"VERSION = '2.0'\n"


def test_an_export_from_before_day_two_merges_against_its_delivered_commit(
    gh: HostEnv, project: Project
) -> None:
    repo, first = publish_first(gh, project)
    gh.git(repo, "update-ref", "-d", "refs/projectgen/demo/base")  # no record, as before this feature
    Team(gh, repo).commit({"README.md": b"# demo\n\nteam notes\n"})

    project.write("bin/run", b"#!/bin/sh\necho run v2\n", executable=True)
    second = gh.run(gh.request(project, claimed=repo, delivered_commit=first.commit_sha))

    # Without a base, README.md would be "added by both" and conflict.
    assert second.conflicts == []
    assert file_at(gh, repo, BRANCH, "README.md") == b"# demo\n\nteam notes\n"
    assert file_at(gh, repo, BRANCH, "bin/run") == b"#!/bin/sh\necho run v2\n"


def test_no_change_means_no_branch(gh: HostEnv, project: Project) -> None:
    repo, first = publish_first(gh, project)
    team_head = Team(gh, repo).commit({"HUMAN.md": b"mine\n"})

    again = gh.run(gh.request(project, claimed=repo, delivered_commit=first.commit_sha))

    assert again.action == "Nothing" and not again.pushed and again.commit_sha == first.commit_sha
    assert head(gh, repo) == team_head
    assert BRANCH not in gh.git(repo, "for-each-ref", "--format=%(refname)")
    assert paths_at(gh, repo, "main") >= {"HUMAN.md", "README.md"}


# --- GitHub pull requests (PyGithub) and GitLab merge requests (python-gitlab), on the stand-ins ---
def requests_of(env: HostEnv, repo: str) -> list[dict[str, Any]]:
    """The repository's requests as the stand-in holds them, in GitHub's words."""
    if isinstance(env.fake, FakeGitHub):
        return [
            {**pr, "state": "merged" if pr["merged_at"] else pr["state"]}
            for pr in env.fake.pulls.get(repo.lower(), [])
        ]
    return [
        {
            "head": mr["source_branch"],
            "base": mr["target_branch"],
            "state": "open" if mr["state"] == "opened" else mr["state"],
            "draft": mr["title"].startswith("Draft: "),
            "labels": mr["labels"],
            "body": mr["description"],
            "title": mr["title"],
        }
        for mr in env.fake.project(repo).get("merge_requests", [])
    ]


def merge_by_hand(env: HostEnv, team: Team, repo: str, number: int) -> None:
    """A squash merge of the export's request, as a person does it in the web UI."""
    team.git("fetch", "--quiet", "origin", "projectgen/demo")
    squashed = team.git("commit-tree", "FETCH_HEAD^{tree}", "-p", "HEAD", "-m", f"Template update ({number})")
    team.git("push", "--quiet", "origin", f"{squashed}:refs/heads/main")
    if isinstance(env.fake, FakeGitHub):
        env.fake.merge_pull(repo, number)
    else:
        env.fake.merge_request(repo, number, state="merged")


def test_an_update_opens_one_request_and_a_newer_render_edits_it(env: HostEnv, project: Project) -> None:
    repo, first = publish_first(env, project)
    Team(env, repo).commit({"HUMAN.md": b"mine\n"})
    project.write("README.md", b"# demo v2\n")

    second = env.run(env.request(project, claimed=repo, delivered_commit=first.commit_sha))
    project.write("README.md", b"# demo v3\n")
    third = env.run(env.request(project, claimed=repo, delivered_commit=first.commit_sha))

    assert second.pull_request is not None and third.pull_request is not None
    assert second.pull_request.number == third.pull_request.number == 1
    [pr] = requests_of(env, repo)
    assert (pr["head"], pr["base"], pr["state"], pr["draft"], pr["labels"]) == (
        "projectgen/demo",
        "main",
        "open",
        False,
        [],
    )
    assert project.manifest.content_hash in pr["body"] and "`README.md`" in pr["body"]
    assert third.pull_request.head_sha == head(env, repo, BRANCH)


def test_the_request_names_who_asked_for_the_export(env: HostEnv, project: Project) -> None:
    """status.createdBy reaches the body as a code span: a cluster user is no forge handle to @-mention."""
    repo, first = publish_first(env, project)
    project.write("README.md", b"# demo v2\n")

    env.run(
        env.request(
            project,
            claimed=repo,
            delivered_commit=first.commit_sha,
            export_name="billing-api-github",
            export_namespace="team-a",
            created_by="alice",
        )
    )

    [pr] = requests_of(env, repo)
    assert pr["body"].startswith("Requested by `alice` via RepositoryExport `team-a/billing-api-github`.")


TEMPLATE = "https://git.example.org/platform/service-template.git"


def test_the_request_names_the_template_refs_from_the_last_delivery_to_this_one(
    env: HostEnv, project: Project
) -> None:
    """The "from" is what the base ref's render recorded, not the export's status: an export whose
    status lost deliveredContentHash (or a new operator volume) still names v1.0.0."""
    v1_0, v1_1 = TemplateRef(0, TEMPLATE, "v1.0.0"), TemplateRef(0, TEMPLATE, "v1.1.0")
    repo, first = publish_first_with(env, project, templates=[v1_0])
    project.write("README.md", b"# demo v2\n")

    env.run(env.request(project, claimed=repo, delivered_commit=first.commit_sha, templates=[v1_1]))

    [pr] = requests_of(env, repo)
    assert "template service-template v1.0.0 → v1.1.0" in pr["title"]
    assert f"Template `{TEMPLATE}` moved: `v1.0.0` → `v1.1.0`." in pr["body"]


def test_a_conflict_opens_a_draft_with_the_label(env: HostEnv, project: Project) -> None:
    repo, first = publish_first(env, project)
    Team(env, repo).commit({"README.md": b"# demo by the team\n"})
    project.write("README.md", b"# demo by the template\n")

    result = env.run(env.request(project, claimed=repo, delivered_commit=first.commit_sha))

    [pr] = requests_of(env, repo)
    assert pr["draft"] and pr["labels"] == ["projectgen-conflicts"] and "1 conflict" in pr["title"]
    assert result.pull_request is not None and result.pull_request.draft and result.warnings == []


def test_already_exists_finds_and_edits_the_open_request(env: HostEnv, project: Project) -> None:
    """GitHub's 422 "A pull request already exists", GitLab's 409 "Another open merge request"."""
    repo, first = publish_first(env, project)
    Team(env, repo).commit({"HUMAN.md": b"mine\n"})
    project.write("README.md", b"# demo v2\n")
    env.run(env.request(project, claimed=repo, delivered_commit=first.commit_sha))
    listing = "/repos/*/pulls" if isinstance(env.fake, FakeGitHub) else "/projects/*/merge_requests"
    env.fake.fail_next("GET", listing, status=200, body=[])  # a restart that saw no request
    project.write("README.md", b"# demo v3\n")

    again = env.run(env.request(project, claimed=repo, delivered_commit=first.commit_sha))

    assert again.pull_request is not None and again.pull_request.number == 1
    assert len(requests_of(env, repo)) == 1 and env.fake.count("POST", listing) == 2


def test_a_lost_create_answer_still_gives_one_request(env: HostEnv, project: Project) -> None:
    repo, first = publish_first(env, project)
    Team(env, repo).commit({"HUMAN.md": b"mine\n"})
    project.write("README.md", b"# demo v2\n")
    listing = "/repos/*/pulls" if isinstance(env.fake, FakeGitHub) else "/projects/*/merge_requests"
    env.fake.fail_next("POST", listing, status=502, after=True)

    result = env.run(env.request(project, claimed=repo, delivered_commit=first.commit_sha))

    assert result.pull_request is not None and len(requests_of(env, repo)) == 1


def test_a_merged_request_then_a_render_opens_a_fresh_one(env: HostEnv, project: Project) -> None:
    repo, first = publish_first(env, project)
    team = Team(env, repo)
    team.commit({"README.md": b"# demo, the team's\n"})
    project.write("src/demo/__init__.py", b"VERSION = '2.0'\n")
    env.run(env.request(project, claimed=repo, delivered_commit=first.commit_sha))
    merge_by_hand(env, team, repo, 1)

    project.write("src/demo/__init__.py", b"VERSION = '3.0'\n")
    third = env.run(env.request(project, claimed=repo, delivered_commit=first.commit_sha))

    assert third.pull_request is not None and third.pull_request.number == 2 and third.conflicts == []
    assert [pr["state"] for pr in requests_of(env, repo)] == ["merged", "open"]
    assert file_at(env, repo, BRANCH, "README.md") == b"# demo, the team's\n"


def test_the_files_both_sides_changed_are_fetched_in_one_go(gh: HostEnv, project: Project) -> None:
    """Partial clone: the update reads only the blobs it merges, and not one request per blob."""

    def text(i: int, first: bytes = b"line 0", last: bytes = b"line 19") -> bytes:
        return b"%s\n%s%s\n" % (first, b"".join(b"file %d line %d\n" % (i, n) for n in range(18)), last)

    for i in range(30):
        project.write(f"many/f{i}.txt", text(i))
    repo, first = publish_first(gh, project)
    Team(gh, repo).commit({f"many/f{i}.txt": text(i, last=b"team") for i in range(30)})
    for i in range(30):
        project.write(f"many/f{i}.txt", text(i, first=b"template"))
    before = len(gh.fake.git.requests)

    result = gh.run(gh.request(project, claimed=repo, delivered_commit=first.commit_sha))

    fetches = [r for r in gh.fake.git.requests[before:] if r.endswith("git-upload-pack")]
    assert result.conflicts == []
    assert file_at(gh, repo, BRANCH, "many/f7.txt") == text(7, first=b"template", last=b"team")
    assert len(fetches) <= 8, fetches  # listing and fetching refs, then one for 60 blobs (not 60)


def test_the_request_state_poll_is_one_get(env: HostEnv, project: Project) -> None:
    """The poll reads the request by number without looking the repository up first."""
    repo, first = publish_first(env, project)
    team = Team(env, repo)
    project.write("README.md", b"# demo v2\n")
    opened = env.run(env.request(project, claimed=repo, delivered_commit=first.commit_sha)).pull_request
    assert opened is not None and opened.state == "open"
    merge_by_hand(env, team, repo, opened.number)
    before = len(env.fake.calls)

    polled = read_request(env.request(project), repo, opened.number, settings=env.settings)

    assert (polled.number, polled.state, polled.content_hash) == (
        opened.number,
        "merged",
        opened.content_hash,
    )
    assert [method for method, _path in env.fake.calls[before:]] == ["GET"]


def seed(env: HostEnv, full_name: str) -> Team:
    """Someone else's repository with history: files at the root, an executable, a symlink, and
    a neighbour directory beside where the project goes."""
    env.add_existing(full_name)
    team = Team(env, full_name)  # a clone of the empty repository
    team.git("checkout", "--quiet", "-b", "main")
    for path, data in {
        "README.md": b"# monorepo\n",
        "services/other/main.go": b"package main\n",
        "services/billing-notes.txt": b"not the project's\n",
        "bin/tool": b"#!/bin/sh\necho tool\n",
    }.items():
        (team.work / path).parent.mkdir(parents=True, exist_ok=True)
        (team.work / path).write_bytes(data)
    (team.work / "bin/tool").chmod(0o755)
    (team.work / "docs").symlink_to("services/other")
    team.git("add", "-A")
    team.git("commit", "--quiet", "-m", "the monorepo")
    team.git("push", "--quiet", "-u", "origin", "HEAD:main")
    return team


def entries(env: HostEnv, full_name: str, ref: str) -> dict[str, str]:
    return tree_entries(env.bare(full_name), ref, _git_env(env.scratch))


def test_config_path_into_an_existing_repository_leaves_the_rest_byte_identical(
    env: HostEnv, project: Project
) -> None:
    """ifExists: PullRequest and config.path: the first render arrives as a request, under the
    directory; every other entry of the repository is the same object, mode and link as before."""
    repo = f"{env.user}/demo"
    team = seed(env, repo)
    before = head(env, repo)
    where = {"if_exists": "PullRequest", "path": "services/billing", "export_name": "demo"}

    first = env.run(env.request(project, **where))

    assert first.action == "PullRequest" and first.pull_request is not None, first
    assert head(env, repo) == before, "main is not touched: a request"
    main, branch = entries(env, repo, "refs/heads/main"), entries(env, repo, BRANCH)
    assert {p: e for p, e in branch.items() if not p.startswith("services/billing/")} == main
    assert {p.removeprefix("services/billing/") for p in branch if p.startswith("services/billing/")} == {
        f.path for f in project.manifest.files
    }

    team.commit({"README.md": b"# monorepo, edited\n"})
    project.write("README.md", b"# demo v2\n")
    second = env.run(env.request(project, **where, claimed=repo, delivered_commit=first.commit_sha))

    main, branch = entries(env, repo, "refs/heads/main"), entries(env, repo, BRANCH)
    assert {p: e for p, e in branch.items() if not p.startswith("services/billing/")} == main
    assert file_at(env, repo, BRANCH, "services/billing/README.md") == b"# demo v2\n"
    assert second.pull_request is not None and second.pull_request.number == first.pull_request.number


def test_push_never_lands_on_a_branch_this_export_delivered_nothing_to(
    env: HostEnv, project: Project
) -> None:
    """ifExists: PullRequest with strategy Push: main's head is someone else's commit, not this
    export's: a later render is a request again, not a push on top of theirs."""
    repo = f"{env.user}/demo"
    seed(env, repo)
    before = head(env, repo)
    where = {"if_exists": "PullRequest", "export_name": "demo", "update_strategy": UpdateStrategy.PUSH}
    first = env.run(env.request(project, **where))
    assert first.action == "PullRequest"
    project.write("README.md", b"# demo v2\n")

    second = env.run(env.request(project, **where, claimed=repo, delivered_commit=first.commit_sha))

    assert second.action == "PullRequest" and "no commit of this export" in second.reason
    assert head(env, repo) == before


def test_a_new_request_gets_the_configured_people_and_labels_and_a_refusal_is_a_warning(
    gh: HostEnv, project: Project
) -> None:
    """config.pullRequest on GitHub: a reviewer who is no collaborator is GitHub's 422, a Warning."""
    assert isinstance(gh.fake, FakeGitHub)
    gh.fake.collaborators.add("hubot")
    repo, first = publish_first(gh, project)
    project.write("README.md", b"# demo v2\n")
    people = {
        "request_labels": ["template-update"],
        "request_assignees": ["hubot"],
        "request_reviewers": ["octocat", "stranger"],
    }

    result = gh.run(gh.request(project, claimed=repo, delivered_commit=first.commit_sha, **people))

    [pr] = gh.fake.pulls[repo.lower()]
    assert (pr["labels"], pr["assignees"], pr.get("requested_reviewers", [])) == (
        ["template-update"],
        ["hubot"],
        [],
    )
    [warning] = result.warnings
    assert "reviewers not set" in warning and "only be requested from collaborators" in warning
    assert result.pull_request is not None and result.pull_request.state == "open"


def test_gitlab_merge_request_people_are_looked_up_and_a_dropped_one_is_a_warning(
    gl: HostEnv, project: Project
) -> None:
    """config.pullRequest on GitLab: names become user IDs; an unknown name is a Warning, and so is
    a person GitLab drops without an error (not a member of the project)."""
    assert isinstance(gl.fake, FakeGitLab)
    hubot = gl.fake.add_user("hubot")
    gl.fake.add_user("outsider", member=False)
    repo, first = publish_first(gl, project)
    project.write("README.md", b"# demo v2\n")
    people = {
        "request_assignees": ["Hubot"],
        "request_reviewers": ["hubot", "nobody", "outsider"],
    }

    result = gl.run(gl.request(project, claimed=repo, delivered_commit=first.commit_sha, **people))

    assert result.pull_request is not None and result.pull_request.state == "open"
    mr = gl.fake.merge_request(repo, result.pull_request.number)
    assert (mr["assignee_ids"], mr["reviewer_ids"]) == ([hubot], [hubot])
    unknown, dropped = result.warnings
    assert "no GitLab user 'nobody'" in unknown
    assert "did not take outsider" in dropped and "asked to review" in dropped
