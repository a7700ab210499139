"""GitLab publishing against FakeGitLab: namespaces, settings, and every class of API error."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

from conftest import TOKEN, Guard, HostEnv, Project
from projectgen.api.v1alpha1 import forges
from projectgen.api.v1alpha1.repositoryexport import TokenType
from projectgen.export.publish import REFUSED_401
from projectgen_dev.fakehosts import FakeGitLab


def test_user_namespace_private_project_gets_the_tree(gl: HostEnv, project: Project) -> None:
    result = gl.run(gl.request(project, default_branch="trunk"))

    assert result.repository == "root/demo"
    assert result.repository_url == f"{gl.fake.base_url}/root/demo"
    assert result.created and result.pushed and result.warnings == []
    assert gl.claims == ["root/demo"] and gl.fake.created == ["root/demo"]
    sent = gl.fake.project("root/demo")["request"]
    assert sent["visibility"] == "private"
    assert sent["description"] == "A generated project"
    assert sent["topics"] == ["generated", "demo"]
    assert "namespace_id" not in sent
    assert gl.tree("root/demo", "trunk") == project.expected()


# Difference 4: GitLab applies default_branch on create only with initialize_with_readme, which
# the operator does not send: the default branch is set right after the first push.
def test_default_branch_is_set_right_after_the_first_push(gl: HostEnv, project: Project) -> None:
    gl.run(gl.request(project, default_branch="trunk"))
    assert gl.fake.project("root/demo")["default_branch"] == "trunk"
    put = [r for r in gl.fake.requests if r.method == "PUT"]
    assert [r.body for r in put] == [{"default_branch": "trunk"}]
    assert gl.fake.requests.index(put[0]) > gl.fake.requests.index(
        next(r for r in gl.fake.requests if r.method == "POST")
    )
    gl.run(gl.request(project, default_branch="trunk", claimed="root/demo"))
    assert gl.fake.count("PUT", "/projects/*") == 1  # only after the first push


def test_default_branch_of_an_adopted_empty_project(gl: HostEnv, project: Project) -> None:
    gl.fake.add_project("acme/platform/demo")
    gl.run(gl.request(project, owner="acme/platform", default_branch="release", if_exists="Adopt"))
    assert gl.fake.project("acme/platform/demo")["default_branch"] == "release"


def test_stand_in_ignores_default_branch_without_a_readme(gl: HostEnv) -> None:
    def create(**body: object) -> dict[str, object]:
        reply = requests.post(
            f"{gl.fake.api_url}/api/v4/projects", json=body, headers={"PRIVATE-TOKEN": gl.token}, timeout=10
        )
        assert reply.status_code == 201, reply.text
        data: dict[str, object] = reply.json()
        return data

    assert create(name="a", default_branch="trunk")["default_branch"] == "main"
    assert create(name="b", default_branch="trunk", initialize_with_readme=True)["default_branch"] == "trunk"


# Difference 1: a project is never more visible than its group; gitlab.com has no internal.
@pytest.mark.parametrize(("visibility", "allowed"), [("internal", "private"), ("public", "private")])
def test_visibility_above_the_group_is_refused_before_anything_is_created(
    gl: HostEnv, project: Project, visibility: str, allowed: str
) -> None:
    err = gl.fail(gl.request(project, owner="acme/secret", visibility=visibility))
    assert err.permanent
    assert f"visibility {visibility} is not allowed for acme/secret/demo" in str(err)
    assert "group acme/secret is private" in str(err) and str(err).endswith(f"allowed: {allowed}")
    assert gl.claims == [] and gl.fake.count("POST", "/projects") == 0 and gl.fake.created == []


def test_internal_group_allows_internal_not_public(gl: HostEnv, project: Project) -> None:
    gl.fake.add_group("corp", visibility="internal")
    err = gl.fail(gl.request(project, owner="corp", visibility="public"))
    assert str(err).endswith("allowed: private, internal")
    assert gl.run(gl.request(project, owner="corp", visibility="internal")).created


def test_stand_in_refuses_a_project_above_its_group(gl: HostEnv) -> None:
    group = gl.fake.add_group("acme/secret")
    reply = requests.post(
        f"{gl.fake.api_url}/api/v4/projects",
        json={"name": "x", "namespace_id": group["id"], "visibility": "public"},
        headers={"PRIVATE-TOKEN": gl.token},
        timeout=10,
    )
    assert reply.status_code == 400
    assert reply.json() == {"message": {"visibility_level": ["public is not allowed in a private group."]}}


def test_gitlab_com_refuses_internal_before_anything_is_created(
    tmp_path: Path, project: Project, guard: Guard, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeGitLab(tokens={TOKEN}, gitlab_com=True, root=tmp_path / "glcom") as fake:
        # This stand-in plays gitlab.com, which the publisher recognises by its host name.
        monkeypatch.setattr(forges, "GITLAB_COM_HOSTS", ("127.0.0.1",))
        env = HostEnv("gitlab", fake, "root", "", "/projects", "/projects/*", guard, tmp_path)
        err = env.fail(env.request(project, visibility="internal"))
        assert err.permanent and "gitlab.com does not allow internal for new projects" in str(err)
        assert str(err).endswith("allowed: private, public")
        assert fake.count("POST", "/projects") == 0
        reply = requests.post(
            f"{fake.api_url}/api/v4/projects",
            json={"name": "x", "visibility": "internal"},
            headers={"PRIVATE-TOKEN": TOKEN},
            timeout=10,
        )
        assert reply.status_code == 400 and "visibility_level" in reply.json()["message"]
        assert env.run(env.request(project, visibility="public")).created


@pytest.mark.parametrize("visibility", ["internal", "public"])
def test_nested_group_owner(gl: HostEnv, project: Project, visibility: str) -> None:
    result = gl.run(gl.request(project, owner="acme/platform", visibility=visibility))

    assert result.repository == "acme/platform/demo"
    assert ("GET", "/groups/acme/platform") in gl.fake.calls
    record = gl.fake.project("acme/platform/demo")
    group = gl.fake.add_group("acme/platform")
    assert record["request"]["namespace_id"] == group["id"]
    assert record["visibility"] == visibility
    assert gl.tree("acme/platform/demo") == project.expected()


def test_api_url_with_api_v4_suffix(gl: HostEnv, project: Project) -> None:
    result = gl.run(gl.request(project, api_url=gl.fake.api_url + "/api/v4/"))
    assert result.pushed


def test_missing_group_is_permanent(gl: HostEnv, project: Project) -> None:
    err = gl.fail(gl.request(project, owner="nope/team"))
    assert err.permanent and str(err) == "group 'nope/team' not found or not visible to the token"
    assert gl.claims == [] and gl.fake.created == []


def test_bad_token_is_permanent_and_not_retried(gl: HostEnv, project: Project) -> None:
    err = gl.fail(gl.request(project, token="glpat-" + gl.token[::-1]))
    assert err.permanent and str(err) == REFUSED_401
    assert gl.fake.calls == [("GET", "/user")]


def test_403_is_permanent_with_scope_hint(gl: HostEnv, project: Project) -> None:
    gl.fake.fail_next("POST", "/projects", status=403)
    err = gl.fail(gl.request(project))
    assert err.permanent and "api scope" in str(err) and "403 Forbidden" in str(err)


def test_400_is_permanent_with_the_api_message(gl: HostEnv, project: Project) -> None:
    gl.fake.fail_next("POST", "/projects", status=400)
    err = gl.fail(gl.request(project))
    assert err.permanent and "name has already been taken" in str(err)
    assert gl.fake.count("POST", "/projects") == 1


# Difference 5: GitLab's path rules, checked before any request (the CRD refuses them at apply).
@pytest.mark.parametrize("name", ["-bad", "api-", "_api", "a..b", "a-_b", "demo.git", "demo.atom"])
def test_invalid_path_is_refused_before_any_request(gl: HostEnv, project: Project, name: str) -> None:
    err = gl.fail(gl.request(project, name=name))
    assert err.permanent and f"repositoryName {name!r} is not a valid GitLab name" in str(err)
    assert gl.fake.calls == []


@pytest.mark.parametrize("path", ["api-", "a..b", "_x"])
def test_stand_in_refuses_paths_gitlab_refuses(gl: HostEnv, path: str) -> None:
    reply = requests.post(
        f"{gl.fake.api_url}/api/v4/projects",
        json={"name": path},
        headers={"PRIVATE-TOKEN": gl.token},
        timeout=10,
    )
    assert reply.status_code == 400 and "consecutive special characters" in reply.json()["message"]["path"][0]


def test_429_retry_after_then_success(gl: HostEnv, project: Project) -> None:
    gl.fake.fail_next("POST", "/projects", status=429, headers={"Retry-After": "1"})
    start = time.monotonic()
    result = gl.run(gl.request(project))
    assert time.monotonic() - start >= 1.0
    assert result.created and gl.fake.created == ["root/demo"]
    assert gl.fake.count("POST", "/projects") == 2


def test_429_with_far_reset_gives_up_with_retry_after(gl: HostEnv, project: Project) -> None:
    gl.fake.fail_next("GET", "/user", status=429, headers={"RateLimit-Reset": str(int(time.time()) + 300)})
    err = gl.fail(gl.request(project))
    assert not err.permanent and err.retry_after is not None and 290 <= err.retry_after <= 301
    assert gl.fake.count("GET", "/user") == 1


def test_500_then_success(gl: HostEnv, project: Project) -> None:
    gl.fake.fail_next("GET", "/projects/*", status=500)
    assert gl.run(gl.request(project)).pushed
    assert gl.fake.unserved_faults() == []
    assert gl.fake.created == ["root/demo"]


def test_502_forever_is_temporary(gl: HostEnv, project: Project) -> None:
    gl.fake.fail_next("POST", "/projects", status=502, times=100)
    err = gl.fail(gl.request(project))
    assert not err.permanent and "502" in str(err)
    assert gl.fake.count("POST", "/projects") == gl.settings.attempts
    assert gl.fake.created == []


def test_dropped_connection_then_success(gl: HostEnv, project: Project) -> None:
    gl.fake.fail_next("GET", "/user", drop=True)
    assert gl.run(gl.request(project)).pushed
    assert gl.fake.count("GET", "/user") == 2


def test_slow_response_within_the_timeout(gl: HostEnv, project: Project) -> None:
    gl.fake.fail_next("POST", "/projects", status=None, delay=0.4)
    assert gl.run(gl.request(project)).created
    assert gl.fake.count("POST", "/projects") == 1


def test_adopted_project_gets_topics(gl: HostEnv, project: Project) -> None:
    gl.fake.add_project("root/demo")
    result = gl.run(gl.request(project, if_exists="Adopt"))
    assert result.pushed and not result.created
    assert gl.fake.project("root/demo")["topics"] == ["generated", "demo"]
    assert gl.fake.count("PUT", "/projects/*") == 1


def test_oauth_token_is_sent_as_bearer(tmp_path: Path, project: Project, guard: Guard) -> None:
    with FakeGitLab(tokens=(), oauth_tokens={TOKEN}, root=tmp_path / "oauth") as fake:
        fake.add_group("acme/platform", visibility="public")
        env = HostEnv("gitlab", fake, "root", "acme/platform", "/projects", "/projects/*", guard, tmp_path)
        # As PRIVATE-TOKEN, GitLab does not take an OAuth token.
        err = env.fail(env.request(project))
        assert err.permanent and str(err) == REFUSED_401
        result = env.run(env.request(project, token_type=TokenType.OAUTH))
        assert result.created and result.pushed
        assert env.tree("root/demo") == project.expected()
