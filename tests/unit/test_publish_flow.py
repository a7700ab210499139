"""The host-neutral flow: ifExists, restarts, re-exports, the git transport, hygiene.

Tests taking `env` run against both hosts; those about the tree or the token alone use GitHub.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from projectgen.api.v1alpha1.repositoryexport import UpdateStrategy
from projectgen.export.publish import PublishError, PublishRequest, publish, redact, secret_forms
from projectgen.generation.manifest import Manifest, ProjectFile

if TYPE_CHECKING:
    from conftest import HostEnv, Project


def full(env: HostEnv, name: str = "demo") -> str:
    return f"{env.user}/{name}"


# --- ifExists -----------------------------------------------------------------------------------
def test_existing_repository_not_ours_fails(env: HostEnv, project: Project) -> None:
    env.add_existing(full(env))
    err = env.fail(env.request(project))
    assert err.permanent
    assert str(err) == (
        f"repository {full(env)} already exists and was not created by this export; set config.ifExists: "
        "Adopt to push into an empty one, PullRequest to deliver by pull request, or choose another "
        "repositoryName"
    )
    assert env.claims == [] and env.fake.created == []
    assert env.git(full(env), "for-each-ref") == ""


def test_adopt_pushes_into_an_empty_repository(env: HostEnv, project: Project) -> None:
    env.add_existing(full(env))
    result = env.run(env.request(project, if_exists="Adopt"))
    assert result.pushed and not result.created
    assert env.claims == [full(env)] and env.fake.created == []
    assert env.tree(full(env)) == project.expected()


def test_adopt_refuses_a_repository_with_commits(env: HostEnv, project: Project) -> None:
    env.add_existing(full(env))
    seeded = env.fake.seed(full(env), branch="develop")
    err = env.fail(env.request(project, if_exists="Adopt"))
    assert err.permanent
    assert str(err) == (
        f"repository {full(env)} exists and is not empty; Adopt only pushes into an empty repository"
    )
    assert env.claims == []
    assert env.git(full(env), "for-each-ref", "--format=%(refname) %(objectname)").split() == [
        "refs/heads/develop",
        seeded,
    ]


def test_claimed_repository_is_ours_even_with_ifexists_fail(env: HostEnv, project: Project) -> None:
    env.add_existing(full(env))
    result = env.run(env.request(project, claimed=full(env).upper()))
    assert result.pushed and env.claims == [] and env.fake.created == []


# --- restarts -----------------------------------------------------------------------------------
def test_restart_between_create_and_push(env: HostEnv, project: Project) -> None:
    """The first run dies after creating (the push is refused); the next run must not create again."""
    env.fake.git.fail_next(503, match="git-receive-pack")
    one_shot = replace(env.settings, attempts=1)
    err = env.fail(env.request(project), one_shot)
    assert not err.permanent
    assert env.fake.created == [full(env)] and env.claims == [full(env)]
    assert env.git(full(env), "for-each-ref") == ""

    result = env.run(env.request(project, claimed=env.claims[-1]), one_shot)
    assert result.pushed and not result.created
    assert env.fake.created == [full(env)]
    assert env.claims == [full(env)]
    assert env.tree(full(env)) == project.expected()


def test_restart_after_create_reply_was_lost(env: HostEnv, project: Project) -> None:
    env.fake.fail_next("POST", env.create, drop=True, after=True)
    one_shot = replace(env.settings, attempts=1)
    err = env.fail(env.request(project), one_shot)
    assert not err.permanent
    assert env.fake.created == [full(env)]

    result = env.run(env.request(project, claimed=env.claims[-1]), one_shot)
    assert result.pushed and env.fake.created == [full(env)]


def test_claim_failure_creates_nothing(env: HostEnv, project: Project) -> None:
    def claim(full_name: str) -> None:
        raise RuntimeError("status patch failed")

    with pytest.raises(RuntimeError, match="status patch failed"):
        publish(env.request(project), claim=claim, settings=env.settings)
    assert env.fake.created == []


def test_claimed_but_deleted_repository_is_created_again(env: HostEnv, project: Project) -> None:
    result = env.run(env.request(project, claimed=full(env)))
    assert result.created and env.claims == [] and env.fake.created == [full(env)]


# --- re-export ----------------------------------------------------------------------------------
def test_push_strategy_adds_a_commit_on_top_and_identical_tree_pushes_nothing(
    env: HostEnv, project: Project
) -> None:
    first = env.run(env.request(project))
    claimed = env.claims[-1]

    project.write("README.md", b"# demo v2\n")
    project.write("src/demo/new.py", b"print('new')\n")
    project.remove("docs/with space.md")
    (project.tree / "bin/run").chmod(0o644)
    project.rebuild()
    push = {"update_strategy": UpdateStrategy.PUSH, "delivered_commit": first.commit_sha}
    second = env.run(env.request(project, claimed=claimed, commit_message="Regenerated", **push))
    assert second.pushed and not second.created and second.commit_sha != first.commit_sha
    assert env.git(claimed, "rev-parse", f"{second.commit_sha}^").strip() == first.commit_sha
    assert env.git(claimed, "rev-parse", "refs/heads/main").strip() == second.commit_sha
    assert env.tree(claimed) == project.expected()
    assert env.git(claimed, "log", "-1", "--format=%s|%an|%ae|%cn", "main").strip() == (
        "Regenerated|projectgen|projectgen@users.noreply.local|projectgen"
    )

    third = env.run(env.request(project, claimed=claimed, **{**push, "delivered_commit": second.commit_sha}))
    assert not third.pushed and third.commit_sha == second.commit_sha
    assert env.git(claimed, "rev-parse", "refs/heads/main").strip() == second.commit_sha
    assert env.fake.created == [claimed]


def test_topics_are_applied_once(env: HostEnv, project: Project) -> None:
    env.run(env.request(project))
    env.run(env.request(project, claimed=env.claims[-1], topics=["changed"]))
    puts = env.fake.count("PUT", "*topics") + env.fake.count("PUT", "/projects/*")
    assert puts == (1 if env.host == "github" else 0)  # GitLab takes topics with the create request


# --- git transport ------------------------------------------------------------------------------
def test_git_server_error_is_retried(env: HostEnv, project: Project) -> None:
    env.fake.git.fail_next(500, match="git-receive-pack")
    result = env.run(env.request(project))
    assert env.fake.unserved_faults() == []
    assert result.pushed and env.tree(full(env)) == project.expected()


@pytest.mark.parametrize("status", [401, 403])
def test_git_server_refusing_the_token_is_permanent(env: HostEnv, project: Project, status: int) -> None:
    env.fake.git.fail_next(status, match="git-receive-pack", times=5)
    err = env.fail(env.request(project))
    assert err.permanent
    assert str(err) == (
        "the token was refused by the git server (HTTP 401/403): check it has write access to the repository"
    )


def test_git_receive_pack_disabled_is_permanent(gh: HostEnv, project: Project) -> None:
    gh.fake.git.allow_push = False
    err = gh.fail(gh.request(project))
    assert err.permanent and "refused by the git server" in str(err)


def test_file_changed_after_the_manifest_is_refused(gh: HostEnv, project: Project) -> None:
    (project.tree / "README.md").write_bytes(b"# tampered\n")
    err = gh.fail(gh.request(project))
    assert err.permanent and "README.md" in str(err) and "does not match the manifest" in str(err)
    assert gh.git(full(gh), "for-each-ref") == ""


def test_missing_file_is_refused(gh: HostEnv, project: Project) -> None:
    (project.tree / "assets/blob.bin").unlink()
    err = gh.fail(gh.request(project))
    assert err.permanent and "missing from the tree" in str(err)


@pytest.mark.parametrize("path", ["../escape.txt", "/etc/passwd", "a/./b", ".git/config", "sub/.GIT/hooks/x"])
def test_unsafe_manifest_path_is_refused(gh: HostEnv, project: Project, path: str) -> None:
    f = replace(project.manifest.files[0], path=path)
    manifest = Manifest.build([*project.manifest.files, f])
    err = gh.fail(gh.request(project, files=manifest.files, content_hash=manifest.content_hash))
    assert err.permanent and "not a safe relative path" in str(err)


def test_symlink_in_the_tree_is_refused(gh: HostEnv, project: Project) -> None:
    target = project.tree / "README.md"
    data = target.read_bytes()
    (project.tree / "outside.txt").write_bytes(data)
    target.unlink()
    target.symlink_to(project.tree / "outside.txt")
    err = gh.fail(gh.request(project))
    assert err.permanent and "README.md" in str(err)


def test_content_hash_mismatch_is_refused(gh: HostEnv, project: Project) -> None:
    err = gh.fail(gh.request(project, content_hash=hashlib.sha256(b"other").hexdigest()))
    assert err.permanent and "contentHash" in str(err)
    assert gh.fake.calls == []


def test_empty_tree_pushes_an_empty_commit(gh: HostEnv, project: Project) -> None:
    empty = Manifest.build([])
    result = gh.run(gh.request(project, files=empty.files, content_hash=empty.content_hash))
    assert result.pushed and gh.tree(full(gh)) == {}


# --- token hygiene ------------------------------------------------------------------------------
@pytest.mark.parametrize("token", ["", "has space", "trailing-newline\n"])
def test_malformed_token_is_refused_early(gh: HostEnv, project: Project, token: str) -> None:
    err = gh.fail(gh.request(project, token=token))
    assert err.permanent and gh.fake.calls == []


def test_request_repr_hides_the_token(gh: HostEnv, project: Project) -> None:
    req = gh.request(project)
    assert gh.token not in repr(req)


def test_messages_are_redacted_on_the_way_out(env: HostEnv, project: Project) -> None:
    """Even a server that echoes the token in an error body cannot leak it into status."""
    env.fake.fail_next("GET", "/user", status=403, body={"message": f"bad token {env.token}"})
    err = env.fail(env.request(project))
    assert env.token not in str(err) and "***" in str(err)


def test_redact_covers_basic_auth_forms(gh: HostEnv) -> None:
    text = " ".join(gh.secrets)
    assert redact(text, secret_forms(gh.token)).split() == ["***"] * len(gh.secrets)


def test_successful_publish_writes_no_token_to_disk_or_argv(env: HostEnv, project: Project) -> None:
    env.run(env.request(project))
    # the guard fixture checks argv, logs and every file of the work dir at teardown
    assert env.guard.workdirs == 1
    assert any("git push" in a or "git', 'push" in a for a in env.guard.argv)


def test_publish_request_type_is_frozen(gh: HostEnv, project: Project) -> None:
    req: PublishRequest = gh.request(project)
    with pytest.raises(AttributeError):
        req.name = "other"  # type: ignore[misc]


# --- symlinks -----------------------------------------------------------------------------------
def _with_links(project: Project, links: dict[str, str]) -> Manifest:
    records = []
    for path, target in links.items():
        (project.tree / path).parent.mkdir(parents=True, exist_ok=True)
        (project.tree / path).symlink_to(target)
        raw = target.encode()
        records.append(
            ProjectFile(
                path=path,
                name=path.rpartition("/")[2],
                type="symlink",
                size=len(raw),
                sha256=hashlib.sha256(raw).hexdigest(),
                target=target,
            )
        )
    return Manifest.build([*project.manifest.files, *records])


def test_symlinks_are_pushed_with_mode_120000(gh: HostEnv, project: Project, tmp_path: Path) -> None:
    links = {"README": "README.md", "demo": "src/demo", "docs/readme.md": "../README.md"}
    manifest = _with_links(project, links)
    result = gh.run(gh.request(project, files=manifest.files, content_hash=manifest.content_hash))
    assert result.pushed
    clone = tmp_path / "clone"
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "GIT_CONFIG_NOSYSTEM": "1", "LC_ALL": "C"}
    subprocess.run(["git", "clone", "-q", str(gh.bare(full(gh))), str(clone)], env=env, check=True)
    listing = subprocess.run(
        ["git", "-C", str(clone), "ls-tree", "-r", "HEAD"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    modes = {line.split("\t")[1]: line.split()[0] for line in listing.splitlines()}
    for path, target in links.items():
        assert modes[path] == "120000", path
        assert os.readlink(clone / path) == target
    assert modes["README.md"] == "100644" and modes["bin/run"] == "100755"
    assert (clone / "demo" / "__init__.py").read_bytes() == b"VERSION = '1.0'\n"


def test_symlink_changed_on_disk_is_not_pushed(gh: HostEnv, project: Project) -> None:
    manifest = _with_links(project, {"README": "README.md"})
    (project.tree / "README").unlink()
    (project.tree / "README").symlink_to("/etc/passwd")
    err = gh.fail(gh.request(project, files=manifest.files, content_hash=manifest.content_hash))
    assert err.permanent
    assert "file 'README' does not match the manifest (symlink points to '/etc/passwd'" in str(err)
    assert gh.git(full(gh), "for-each-ref") == ""


def test_escaping_symlink_in_the_manifest_is_not_pushed(gh: HostEnv, project: Project) -> None:
    manifest = _with_links(project, {"docs/up": "../../outside"})
    err = gh.fail(gh.request(project, files=manifest.files, content_hash=manifest.content_hash))
    assert err.permanent
    assert "symlink 'docs/up' -> '../../outside' points outside the project" in str(err)


def test_each_retry_is_reported_and_a_permanent_failure_is_not(env: HostEnv, project: Project) -> None:
    """`on_retry` (the publish-retries metric) sees every temporary failure retried, no other."""
    retries: list[None] = []
    env.fake.git.fail_next(500, match="git-receive-pack")
    result = publish(
        env.request(project),
        claim=env.claims.append,
        settings=env.settings,
        on_retry=lambda: retries.append(None),
    )
    assert result.pushed and len(retries) == 1
    env.fake.git.fail_next(403, match="git-receive-pack")
    with pytest.raises(PublishError) as info:
        publish(
            env.request(project, name="other"),
            claim=env.claims.append,
            settings=env.settings,
            on_retry=lambda: retries.append(None),
        )
    assert info.value.permanent and len(retries) == 1
