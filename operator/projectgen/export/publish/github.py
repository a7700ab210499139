"""GitHub and GitHub Enterprise through PyGithub: owner, repository, topics.

API errors become PublishError in one place, `_api_error`. PyGithub's own retries are
off (`retry=None`): publish() retries, honouring Retry-After, within a bounded budget.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from github import Auth, Consts, Github, GithubException
from github.AuthenticatedUser import AuthenticatedUser
from github.Organization import Organization
from github.Repository import Repository

from projectgen import outbound
from projectgen.api.v1alpha1.repositoryexport import ExportType, Visibility
from projectgen.export.publish.http import retry_after_from, transport_error
from projectgen.export.publish.model import (
    GIT_USERNAMES,
    REFUSED_401,
    Owner,
    PublishError,
    PublishRequest,
    PublishSettings,
    RemoteRepository,
)

DEFAULT_API_URL = "https://api.github.com"
SCOPE_HINT = (
    "it needs the repo scope (classic token), or Administration and Contents write access to the "
    "owner's repositories (fine-grained token)"
)
SECONDARY_LIMIT_WAIT = 60.0
"""GitHub's advice when a secondary rate limit names no Retry-After."""


def _api_message(data: Any) -> str:
    if isinstance(data, dict):
        parts = [str(data.get("message") or "")]
        for err in data.get("errors") or []:
            if isinstance(err, dict):
                parts.append(
                    str(err.get("message") or f"{err.get('field', '')} {err.get('code', '')}".strip())
                )
            elif isinstance(err, str):
                parts.append(err)
        return "; ".join(p for p in parts if p)[:500]
    return str(data or "")[:200]


def _rate_limited(status: int, headers: dict[str, str], message: str) -> bool:
    if status == 429:
        return True
    low = message.lower()
    return status == 403 and (
        headers.get("x-ratelimit-remaining") == "0"
        or "retry-after" in headers
        or "rate limit" in low
        or low.endswith("please retry your request again later.")
    )


def _api_error(exc: GithubException, doing: str) -> PublishError:
    """The one mapping from GitHub API errors to what the export reports and how it retries."""
    status = exc.status
    headers = {k.lower(): str(v) for k, v in (exc.headers or {}).items()}
    message = _api_message(exc.data)
    if status == 401:
        return PublishError(REFUSED_401, permanent=True)
    if _rate_limited(status, headers, message):
        wait = retry_after_from(headers, "x-ratelimit-reset")
        if wait is None and "secondary" in message.lower():
            wait = SECONDARY_LIMIT_WAIT
        when = f"; retry in {wait:.0f}s" if wait is not None else ""
        return PublishError(
            f"GitHub rate limit reached while {doing} (HTTP {status}){when}",
            permanent=False,
            retry_after=wait,
        )
    if status == 403:
        return PublishError(
            f"the token lacks permission for {doing} (403: {message or 'Forbidden'}): {SCOPE_HINT}",
            permanent=True,
        )
    if status == 404:
        return PublishError(f"GitHub answered 404 Not Found while {doing}", permanent=True)
    if status == 422:
        return PublishError(f"GitHub refused {doing} (422): {message}", permanent=True)
    if status >= 500 or status in (408, 409):
        return PublishError(f"GitHub API error {status} while {doing}; will retry", permanent=False)
    return PublishError(f"GitHub answered {status} while {doing}: {message}", permanent=True)


class GitHubHost:
    git_username = GIT_USERNAMES[ExportType.GITHUB]

    def __init__(self, req: PublishRequest, settings: PublishSettings) -> None:
        self.api_url = (req.api_url or DEFAULT_API_URL).rstrip("/")
        spacing = settings.github_request_spacing
        self._bound = outbound.bind(req.guard)  # PyGithub's connections go through the policy
        self._gh = Github(
            auth=Auth.Token(req.token),
            base_url=self.api_url,
            timeout=max(1, math.ceil(settings.http_timeout)),
            retry=None,
            seconds_between_requests=Consts.DEFAULT_SECONDS_BETWEEN_REQUESTS if spacing else None,
            seconds_between_writes=Consts.DEFAULT_SECONDS_BETWEEN_WRITES if spacing else None,
        )

    @contextmanager
    def _api(self, doing: str) -> Iterator[None]:
        try:
            yield
        except (PublishError, outbound.Refused):
            raise
        except GithubException as exc:
            raise _api_error(exc, doing) from None
        except Exception as exc:  # timeouts, no connection, a proxy's HTML page ...
            raise transport_error(exc, "GitHub", self.api_url, doing) from None

    def resolve_owner(self, owner: str | None) -> Owner:
        if owner is None:
            with self._api("reading the token's user"):
                user = self._gh.get_user()
                return Owner(user.login, is_user=True, handle=user)
        with self._api(f"looking up organisation {owner!r}"):
            try:
                org = self._gh.get_organization(owner)
                return Owner(org.login, is_user=False, handle=org)
            except GithubException as exc:
                if exc.status != 404:
                    raise
        with self._api("reading the token's user"):
            user = self._gh.get_user()
            if user.login.casefold() == owner.casefold():
                return Owner(user.login, is_user=True, handle=user)
        raise PublishError(f"organisation {owner!r} not found or not visible to the token", permanent=True)

    def find(self, full_name: str) -> RemoteRepository | None:
        with self._api(f"looking up repository {full_name}"):
            try:
                return self._remote(self._gh.get_repo(full_name))
            except GithubException as exc:
                if exc.status == 404:
                    return None
                raise

    def create(self, owner: Owner, req: PublishRequest) -> RemoteRepository:
        full_name = f"{owner.path}/{req.name}"
        extra: dict[str, Any] = {"description": req.description} if req.description else {}
        private = req.visibility != Visibility.PUBLIC
        with self._api(f"creating repository {full_name}"):
            if isinstance(owner.handle, Organization):
                repo = owner.handle.create_repo(
                    req.name, private=private, visibility=str(req.visibility), auto_init=False, **extra
                )
            elif isinstance(owner.handle, AuthenticatedUser):
                if req.visibility == Visibility.INTERNAL:
                    raise PublishError(
                        "visibility internal needs an organisation owner on GitHub: set config.owner",
                        permanent=True,
                    )
                repo = owner.handle.create_repo(req.name, private=private, auto_init=False, **extra)
            else:
                raise TypeError(f"unexpected owner {owner.handle!r}")
            return self._remote(repo)

    def apply_topics(self, repo: RemoteRepository, topics: Sequence[str]) -> list[str]:
        handle = repo.handle
        if not isinstance(handle, Repository):
            return []
        try:
            with self._api(f"setting the topics of {repo.full_name}"):
                handle.replace_topics(list(topics))
        except PublishError as exc:
            return [f"topics were not set: {exc.message}"]
        return []

    def close(self) -> None:
        self._gh.close()
        outbound.unbind(self._bound)

    @staticmethod
    def _remote(repo: Repository) -> RemoteRepository:
        return RemoteRepository(
            full_name=repo.full_name, clone_url=repo.clone_url, web_url=repo.html_url, handle=repo
        )
