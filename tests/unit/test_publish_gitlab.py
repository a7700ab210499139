"""GitLab publishing against FakeGitLab: namespaces, settings, and every class of API error."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest

from projectgen.export.publish import REFUSED_401

if TYPE_CHECKING:
    from conftest import HostEnv, Project


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
    assert sent["default_branch"] == "trunk"
    assert "namespace_id" not in sent
    assert gl.tree("root/demo", "trunk") == project.expected()
    assert gl.fake.count("PUT", "/projects/*") == 0


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


def test_invalid_path_rejected_by_the_api(gl: HostEnv, project: Project) -> None:
    err = gl.fail(gl.request(project, name="-bad"))
    assert err.permanent and "Cannot start with '-'" in str(err)


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
