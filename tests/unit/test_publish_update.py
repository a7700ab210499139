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
from projectgen.export.publish import PublishResult

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
    first = env.run(env.request(project))
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


# --- GitHub pull requests (PyGithub against the stand-in) ------------------------------------------
def pulls(gh: HostEnv, repo: str) -> list[dict[str, Any]]:
    return list(gh.fake.pulls.get(repo.lower(), []))  # type: ignore[union-attr]


def test_github_update_opens_one_pull_request_and_a_newer_render_edits_it(
    gh: HostEnv, project: Project
) -> None:
    repo, first = publish_first(gh, project)
    Team(gh, repo).commit({"HUMAN.md": b"mine\n"})
    project.write("README.md", b"# demo v2\n")

    second = gh.run(gh.request(project, claimed=repo, delivered_commit=first.commit_sha))
    project.write("README.md", b"# demo v3\n")
    third = gh.run(gh.request(project, claimed=repo, delivered_commit=first.commit_sha))

    assert second.pull_request is not None and third.pull_request is not None
    assert second.pull_request.number == third.pull_request.number == 1
    [pr] = pulls(gh, repo)
    assert (pr["head"], pr["base"], pr["state"], pr["draft"], pr["labels"]) == (
        "projectgen/demo",
        "main",
        "open",
        False,
        [],
    )
    assert project.manifest.content_hash in pr["body"] and "`README.md`" in pr["body"]
    assert third.pull_request.head_sha == head(gh, repo, BRANCH)


def test_github_conflict_opens_a_draft_with_the_label(gh: HostEnv, project: Project) -> None:
    repo, first = publish_first(gh, project)
    Team(gh, repo).commit({"README.md": b"# demo by the team\n"})
    project.write("README.md", b"# demo by the template\n")

    result = gh.run(gh.request(project, claimed=repo, delivered_commit=first.commit_sha))

    [pr] = pulls(gh, repo)
    assert pr["draft"] and pr["labels"] == ["projectgen-conflicts"] and result.warnings == []
    assert "1 conflict" in pr["title"]


def test_github_already_exists_finds_and_edits_the_open_request(gh: HostEnv, project: Project) -> None:
    repo, first = publish_first(gh, project)
    Team(gh, repo).commit({"HUMAN.md": b"mine\n"})
    project.write("README.md", b"# demo v2\n")
    gh.run(gh.request(project, claimed=repo, delivered_commit=first.commit_sha))
    # The listing misses the open request once (a restart that saw none): the create call gets 422.
    gh.fake.fail_next("GET", "/repos/*/pulls", status=200, body=[])
    project.write("README.md", b"# demo v3\n")

    again = gh.run(gh.request(project, claimed=repo, delivered_commit=first.commit_sha))

    assert again.pull_request is not None and again.pull_request.number == 1
    assert len(pulls(gh, repo)) == 1 and gh.fake.count("POST", "/repos/*/pulls") == 2


def test_github_a_lost_create_answer_still_gives_one_request(gh: HostEnv, project: Project) -> None:
    repo, first = publish_first(gh, project)
    Team(gh, repo).commit({"HUMAN.md": b"mine\n"})
    project.write("README.md", b"# demo v2\n")
    gh.fake.fail_next("POST", "/repos/*/pulls", status=502, after=True)

    result = gh.run(gh.request(project, claimed=repo, delivered_commit=first.commit_sha))

    assert result.pull_request is not None and len(pulls(gh, repo)) == 1


def test_github_merged_request_then_a_render_opens_a_fresh_one(gh: HostEnv, project: Project) -> None:
    repo, first = publish_first(gh, project)
    team = Team(gh, repo)
    team.commit({"README.md": b"# demo, the team's\n"})
    project.write("src/demo/__init__.py", b"VERSION = '2.0'\n")
    gh.run(gh.request(project, claimed=repo, delivered_commit=first.commit_sha))
    team.git("fetch", "--quiet", "origin", "projectgen/demo")
    squashed = team.git("commit-tree", "FETCH_HEAD^{tree}", "-p", "HEAD", "-m", "Template update (#1)")
    team.git("push", "--quiet", "origin", f"{squashed}:refs/heads/main")
    gh.fake.merge_pull(repo, 1)  # type: ignore[union-attr]

    project.write("src/demo/__init__.py", b"VERSION = '3.0'\n")
    third = gh.run(gh.request(project, claimed=repo, delivered_commit=first.commit_sha))

    assert third.pull_request is not None and third.pull_request.number == 2 and third.conflicts == []
    assert file_at(gh, repo, BRANCH, "README.md") == b"# demo, the team's\n"


# --- GitLab merge requests (python-gitlab against the stand-in) -----------------------------------
def merge_requests(gl: HostEnv, repo: str) -> list[dict[str, Any]]:
    return list(gl.fake.project(repo).get("merge_requests", []))  # type: ignore[union-attr]


def test_gitlab_update_opens_one_merge_request_and_a_newer_render_edits_it(
    gl: HostEnv, project: Project
) -> None:
    repo, first = publish_first(gl, project)
    Team(gl, repo).commit({"HUMAN.md": b"mine\n"})
    project.write("README.md", b"# demo v2\n")

    second = gl.run(gl.request(project, claimed=repo, delivered_commit=first.commit_sha))
    project.write("README.md", b"# demo v3\n")
    third = gl.run(gl.request(project, claimed=repo, delivered_commit=first.commit_sha))

    assert second.pull_request is not None and third.pull_request is not None
    assert second.pull_request.number == third.pull_request.number == 1
    [mr] = merge_requests(gl, repo)
    assert (mr["source_branch"], mr["target_branch"], mr["state"], mr["labels"]) == (
        "projectgen/demo",
        "main",
        "opened",
        [],
    )
    assert project.manifest.content_hash in mr["description"] and not mr["title"].startswith("Draft:")
    assert third.pull_request.url.endswith("/-/merge_requests/1")


def test_gitlab_conflict_gives_a_draft_with_the_label(gl: HostEnv, project: Project) -> None:
    repo, first = publish_first(gl, project)
    Team(gl, repo).commit({"README.md": b"# demo by the team\n"})
    project.write("README.md", b"# demo by the template\n")

    result = gl.run(gl.request(project, claimed=repo, delivered_commit=first.commit_sha))

    [mr] = merge_requests(gl, repo)
    assert mr["title"].startswith("Draft: ") and mr["labels"] == ["projectgen-conflicts"]
    assert result.pull_request is not None and result.pull_request.draft and result.warnings == []


def test_gitlab_duplicate_409_finds_and_edits_the_open_request(gl: HostEnv, project: Project) -> None:
    repo, first = publish_first(gl, project)
    Team(gl, repo).commit({"HUMAN.md": b"mine\n"})
    project.write("README.md", b"# demo v2\n")
    gl.run(gl.request(project, claimed=repo, delivered_commit=first.commit_sha))
    gl.fake.fail_next("GET", "/projects/*/merge_requests", status=200, body=[])
    project.write("README.md", b"# demo v3\n")

    again = gl.run(gl.request(project, claimed=repo, delivered_commit=first.commit_sha))

    assert again.pull_request is not None and again.pull_request.number == 1
    assert len(merge_requests(gl, repo)) == 1 and gl.fake.count("POST", "/projects/*/merge_requests") == 2


def test_gitlab_merged_request_then_a_render_opens_a_fresh_one(gl: HostEnv, project: Project) -> None:
    repo, first = publish_first(gl, project)
    team = Team(gl, repo)
    team.commit({"README.md": b"# demo, the team's\n"})
    project.write("src/demo/__init__.py", b"VERSION = '2.0'\n")
    gl.run(gl.request(project, claimed=repo, delivered_commit=first.commit_sha))
    team.git("fetch", "--quiet", "origin", "projectgen/demo")
    squashed = team.git("commit-tree", "FETCH_HEAD^{tree}", "-p", "HEAD", "-m", "Template update (!1)")
    team.git("push", "--quiet", "origin", f"{squashed}:refs/heads/main")
    gl.fake.merge_request(repo, 1, state="merged")  # type: ignore[union-attr]

    project.write("src/demo/__init__.py", b"VERSION = '3.0'\n")
    third = gl.run(gl.request(project, claimed=repo, delivered_commit=first.commit_sha))

    assert third.pull_request is not None and third.pull_request.number == 2 and third.conflicts == []
    assert file_at(gl, repo, BRANCH, "README.md") == b"# demo, the team's\n"
