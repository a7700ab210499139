"""GitHub publishing against FakeGitHub: owners, settings, and every class of API error."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import requests

from projectgen.export.publish import REFUSED_401, publish
from projectgen_dev.fakehosts import FakeGitHub

if TYPE_CHECKING:
    from conftest import HostEnv, Project


def test_user_owner_private_repository_gets_the_tree(gh: HostEnv, project: Project) -> None:
    result = gh.run(gh.request(project))

    assert result.repository == "octocat/demo"
    assert result.repository_url == f"{gh.fake.base_url}/octocat/demo"
    assert result.created and result.pushed and result.warnings == []
    assert gh.claims == ["octocat/demo"]
    assert gh.fake.created == ["octocat/demo"]
    assert gh.fake.count("POST", "/user/repos") == 1
    repo = gh.fake.repo("octocat/demo")
    assert repo["private"] is True and repo["visibility"] == "private"
    assert repo["description"] == "A generated project"
    assert repo["topics"] == ["generated", "demo"]
    assert gh.tree("octocat/demo") == project.expected()
    assert gh.guard.workdirs == 1


def test_claim_happens_before_create(gh: HostEnv, project: Project) -> None:
    seen: list[int] = []

    def claim(full_name: str) -> None:
        seen.append(gh.fake.count("POST", "/user/repos"))

    publish(gh.request(project), claim=claim, settings=gh.settings)
    assert seen == [0]


@pytest.mark.parametrize(("owner", "visibility"), [("acme", "public"), ("bigcorp", "internal")])
def test_organisation_owner_and_visibility(
    gh: HostEnv, project: Project, owner: str, visibility: str
) -> None:
    result = gh.run(gh.request(project, owner=owner, visibility=visibility))

    assert result.repository == f"{owner}/demo"
    assert gh.fake.created == [f"{owner}/demo"]
    repo = gh.fake.repo(f"{owner}/demo")
    assert repo["visibility"] == visibility
    assert repo["request"]["private"] is (visibility != "public")
    assert repo["request"]["visibility"] == visibility


def test_owner_naming_the_token_user_is_the_user(gh: HostEnv, project: Project) -> None:
    result = gh.run(gh.request(project, owner="OctoCat"))
    assert result.repository == "octocat/demo"
    assert gh.fake.count("POST", "/user/repos") == 1


def test_internal_visibility_needs_an_organisation(gh: HostEnv, project: Project) -> None:
    err = gh.fail(gh.request(project, visibility="internal"))
    assert err.permanent and "config.owner" in str(err)
    assert gh.fake.created == []


# Difference 2: `internal` only for organisations of an enterprise (POST /orgs/{org}/repos
# enumerates public and private on github.com).
def test_internal_outside_an_enterprise_is_refused_before_anything_is_created(
    gh: HostEnv, project: Project
) -> None:
    err = gh.fail(gh.request(project, owner="acme", visibility="internal"))
    assert err.permanent
    assert "organisation acme" in str(err) and "'free' plan" in str(err)
    assert "allowed: private, public" in str(err)
    assert gh.claims == [] and gh.fake.count("POST", "/orgs/*") == 0 and gh.fake.created == []


def test_internal_when_the_plan_is_hidden_is_refused_by_github_with_a_hint(
    gh: HostEnv, project: Project
) -> None:
    gh.fake.add_org("quiet", plan_visible=False)  # the token is no owner: GitHub hides the plan
    err = gh.fail(gh.request(project, owner="quiet", visibility="internal"))
    assert (
        err.permanent
        and "422" in str(err)
        and "only for organisations that belong to an enterprise" in str(err)
    )
    assert gh.fake.count("POST", "/orgs/quiet/repos") == 1 and gh.fake.created == []


def test_stand_in_refuses_internal_outside_an_enterprise(gh: HostEnv) -> None:
    reply = requests.post(
        f"{gh.fake.api_url}/orgs/acme/repos",
        json={"name": "x", "visibility": "internal"},
        headers={"Authorization": f"token {gh.token}"},
        timeout=10,
    )
    assert reply.status_code == 422 and reply.json()["errors"][0]["field"] == "visibility"


def test_internal_on_enterprise_server_for_any_organisation(
    tmp_path: Path, project: Project, github_env: Callable[[FakeGitHub], HostEnv], gh: HostEnv
) -> None:
    with FakeGitHub(tokens={gh.token}, orgs=["acme"], enterprise=True, root=tmp_path / "ghes") as fake:
        env = github_env(fake)
        env.run(env.request(project, owner="acme", visibility="internal", api_url=fake.api_url))
        assert fake.repo("acme/demo")["visibility"] == "internal"


def test_enterprise_base_url(
    tmp_path: Path, project: Project, github_env: Callable[[FakeGitHub], HostEnv], gh: HostEnv
) -> None:
    with FakeGitHub(tokens={gh.token}, orgs=["acme"], enterprise=True, root=tmp_path / "ghes") as fake:
        assert fake.api_url.endswith("/api/v3")
        env = github_env(fake)
        result = env.run(env.request(project, owner="acme", api_url=fake.api_url + "/"))
        assert result.repository == "acme/demo" and result.pushed
        assert ("POST", "/orgs/acme/repos") in fake.calls
        assert fake.requests[0].path == "/orgs/acme"
        assert env.tree("acme/demo") == project.expected()
    assert gh.fake.calls == []


def test_missing_organisation_is_permanent(gh: HostEnv, project: Project) -> None:
    err = gh.fail(gh.request(project, owner="nope"))
    assert err.permanent
    assert str(err) == "organisation 'nope' not found or not visible to the token"
    assert gh.claims == [] and gh.fake.created == []


def test_bad_token_is_permanent_and_not_retried(gh: HostEnv, project: Project) -> None:
    err = gh.fail(gh.request(project, token="wrong-" + gh.token[::-1]))
    assert err.permanent and str(err) == REFUSED_401
    assert gh.fake.calls == [("GET", "/user")]


def test_403_without_scope_is_permanent(gh: HostEnv, project: Project) -> None:
    gh.fake.fail_next("POST", "/user/repos", status=403)
    err = gh.fail(gh.request(project))
    assert err.permanent and "repo scope" in str(err)
    assert "Resource not accessible by personal access token" in str(err)
    assert gh.fake.count("POST", "/user/repos") == 1


def test_403_primary_rate_limit_far_reset_gives_up_with_retry_after(gh: HostEnv, project: Project) -> None:
    gh.fake.rate_limit_next("GET", "/user", reset_in=600)
    start = time.monotonic()
    err = gh.fail(gh.request(project))
    assert not err.permanent
    assert err.retry_after is not None and 590 <= err.retry_after <= 601
    assert "rate limit" in str(err)
    assert gh.fake.count("GET", "/user") == 1 and time.monotonic() - start < 5


def test_403_primary_rate_limit_near_reset_waits_then_succeeds(gh: HostEnv, project: Project) -> None:
    gh.fake.rate_limit_next("GET", "/repos/*", reset_in=1)
    result = gh.run(gh.request(project))
    assert result.pushed and gh.fake.count("GET", "/repos/*") == 2


def test_secondary_rate_limit_honours_retry_after(gh: HostEnv, project: Project) -> None:
    gh.fake.secondary_rate_limit_next("POST", "/user/repos", retry_after=1)
    start = time.monotonic()
    result = gh.run(gh.request(project))
    assert time.monotonic() - start >= 1.0
    assert result.created and gh.fake.created == ["octocat/demo"]


# Difference 3: a secondary limit without Retry-After while x-ratelimit-remaining is not 0: at least
# a minute, then exponentially longer; never until x-ratelimit-reset (an hour away in the stand-in).
@pytest.mark.parametrize(("retries", "wait"), [(0, 60), (1, 120), (2, 240), (10, 960)])
def test_secondary_rate_limit_without_retry_after_waits_a_minute_then_backs_off(
    gh: HostEnv, project: Project, retries: int, wait: float
) -> None:
    gh.fake.secondary_rate_limit_next("POST", "/user/repos", retry_after=None)
    start = time.monotonic()
    err = gh.fail(gh.request(project, retries=retries))
    assert not err.permanent and err.retry_after == wait
    assert "secondary rate limit" in str(err)
    assert gh.fake.count("POST", "/user/repos") == 1 and time.monotonic() - start < 5


def test_429_retry_after_then_success(gh: HostEnv, project: Project) -> None:
    gh.fake.fail_next("GET", "/user", status=429, headers={"Retry-After": "1"})
    start = time.monotonic()
    result = gh.run(gh.request(project))
    assert time.monotonic() - start >= 1.0
    assert result.pushed and gh.fake.count("GET", "/user") == 2


def test_422_is_permanent_with_the_api_message(gh: HostEnv, project: Project) -> None:
    gh.fake.fail_next("POST", "/user/repos", status=422)
    err = gh.fail(gh.request(project))
    assert err.permanent
    assert "Repository creation failed." in str(err) and "name already exists on this account" in str(err)


def test_invalid_name_rejected_by_the_api(gh: HostEnv, project: Project) -> None:
    gh.fake.fail_next(
        "POST",
        "/user/repos",
        status=422,
        body={
            "message": "Repository creation failed.",
            "errors": [{"field": "name", "message": "name is invalid"}],
        },
    )
    err = gh.fail(gh.request(project))
    assert err.permanent and "name is invalid" in str(err)


def test_500_then_success_creates_one_repository(gh: HostEnv, project: Project) -> None:
    gh.fake.fail_next("POST", "/user/repos", status=500)
    result = gh.run(gh.request(project))
    assert result.created and gh.fake.created == ["octocat/demo"]
    assert gh.fake.count("POST", "/user/repos") == 2


def test_502_html_then_success(gh: HostEnv, project: Project) -> None:
    gh.fake.fail_next("GET", "/repos/*", status=502)
    assert gh.run(gh.request(project)).pushed
    assert gh.fake.unserved_faults() == []


def test_500_forever_is_temporary_after_bounded_attempts(gh: HostEnv, project: Project) -> None:
    gh.fake.fail_next("GET", "/user", status=500, times=100)
    err = gh.fail(gh.request(project))
    assert not err.permanent and err.retry_after is None
    assert "500" in str(err)
    assert gh.fake.count("GET", "/user") == gh.settings.attempts


def test_dropped_connection_then_success(gh: HostEnv, project: Project) -> None:
    gh.fake.fail_next("GET", "/repos/*", drop=True)
    result = gh.run(gh.request(project))
    assert result.pushed and gh.fake.count("GET", "/repos/*") == 2


def test_create_reply_lost_is_recovered_in_the_same_call(gh: HostEnv, project: Project) -> None:
    gh.fake.fail_next("POST", "/user/repos", drop=True, after=True)
    result = gh.run(gh.request(project))
    assert result.created and result.pushed
    assert gh.fake.created == ["octocat/demo"] and gh.claims == ["octocat/demo"]
    assert gh.fake.repo("octocat/demo")["topics"] == ["generated", "demo"]
    assert gh.tree("octocat/demo") == project.expected()


def test_slow_response_within_the_timeout(gh: HostEnv, project: Project) -> None:
    gh.fake.fail_next("GET", "/user", status=None, delay=0.4)
    result = gh.run(gh.request(project))
    assert result.pushed and gh.fake.count("GET", "/user") == 1


def test_response_slower_than_the_timeout_is_retried(gh: HostEnv, project: Project) -> None:
    gh.fake.fail_next("GET", "/user", status=None, delay=1.6)
    result = gh.run(gh.request(project), replace(gh.settings, http_timeout=1.0))
    assert result.pushed and gh.fake.count("GET", "/user") == 2


@pytest.mark.parametrize("status", [403, 422])
def test_topics_refused_is_a_warning(gh: HostEnv, project: Project, status: int) -> None:
    gh.fake.fail_next("PUT", "/repos/*/topics", status=status, body={"message": "Topics are not available"})
    result = gh.run(gh.request(project))
    assert result.pushed and result.created
    assert len(result.warnings) == 1 and result.warnings[0].startswith("topics were not set")
    assert gh.fake.repo("octocat/demo")["topics"] == []
