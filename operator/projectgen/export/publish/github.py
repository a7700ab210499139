"""GitHub and GitHub Enterprise through PyGithub: owner, repository, topics.

Credentials: a token, or a GitHub App (`githubapp`), whose installation tokens authenticate both
the API calls and the push.

API errors become PublishError in one place, `_api_error`. PyGithub's own retries are
off (`retry=None`): publish() retries, honouring Retry-After, within a bounded budget.

Rate limits, as https://docs.github.com/rest/using-the-rest-api/best-practices-for-using-the-rest-api
#handle-rate-limit-errors-appropriately says: with `Retry-After`, wait that long; else with
`x-ratelimit-remaining: 0` (the primary limit), wait until `x-ratelimit-reset`; else (a
secondary limit) wait at least a minute, then exponentially longer, never until the reset
(which is the primary window's, up to an hour away).

Pull requests (day two): `GET /repos/{o}/{r}/pulls?state=all&head=owner:branch` finds the export's,
`POST .../pulls` opens it (`draft` when there are conflicts; 422 "A pull request already exists"
finds and edits it), `PATCH .../pulls/{n}` edits or closes it, `POST/DELETE .../issues/{n}/labels`
add or remove the conflict label, `POST .../issues/{n}/comments` says why it is closed. REST cannot
turn a request into a draft or back (only GraphQL can): an edited request keeps its draft state.

Visibility: `POST /orgs/{org}/repos` enumerates `public` and `private` on github.com;
`internal` exists only for organisations that belong to an enterprise (GitHub Enterprise
Cloud, and every organisation of a GitHub Enterprise Server), never for a user.
"""

from __future__ import annotations

import math
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from github import Auth, Consts, Github, GithubException
from github.AuthenticatedUser import AuthenticatedUser
from github.Organization import Organization
from github.PullRequest import PullRequest as GhPullRequest
from github.Repository import Repository

from projectgen import outbound
from projectgen.api.v1alpha1.repositoryexport import ExportType, RequestState, Visibility
from projectgen.export.publish.githubapp import AppTokens, InstallationTokenAuth
from projectgen.export.publish.http import retry_after_from, status_error, transport_error
from projectgen.export.publish.model import (
    GIT_USERNAMES,
    REFUSED_401,
    Owner,
    PublishError,
    PublishRequest,
    PublishSettings,
    RemoteRepository,
)
from projectgen.export.update.record import CONFLICT_LABEL, PullRequest, RequestText

DEFAULT_API_URL = "https://api.github.com"
SCOPE_HINT = (
    "it needs the repo scope (classic token), or Administration and Contents write access to the "
    "owner's repositories (fine-grained token)"
)
SECONDARY_LIMIT_WAIT = 60.0
"""GitHub's advice when a secondary rate limit names no Retry-After: at least a minute, ..."""
SECONDARY_LIMIT_MAX_WAIT = 960.0
"""... then doubling on each further hit, up to this."""
ENTERPRISE_PLAN = "enterprise"
INTERNAL_HINT = (
    "visibility internal exists only for organisations that belong to an enterprise; use private or public"
)


def secondary_limit_wait(hits: int) -> float:
    """How long to wait after the (hits+1)-th secondary rate limit of one export in a row."""
    return float(min(SECONDARY_LIMIT_MAX_WAIT, SECONDARY_LIMIT_WAIT * 2 ** max(0, hits)))


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


def _api_error(exc: GithubException, doing: str, secondary_wait: Callable[[], float]) -> PublishError:
    """The one mapping from GitHub API errors to what the export reports and how it retries."""
    status = exc.status
    headers = {k.lower(): str(v) for k, v in (exc.headers or {}).items()}
    message = _api_message(exc.data)
    if status == 401:
        return PublishError(REFUSED_401, permanent=True)  # before rate limits: a 401 may carry their headers
    if _rate_limited(status, headers, message):
        if "retry-after" in headers:
            wait = retry_after_from({"retry-after": headers["retry-after"]}, "x-ratelimit-reset")
            kind = "rate limit"
        elif headers.get("x-ratelimit-remaining") == "0":
            wait = retry_after_from(headers, "x-ratelimit-reset")
            kind = "primary rate limit"
        else:
            wait = secondary_wait()
            kind = "secondary rate limit"
        when = f"; retry in {wait:.0f}s" if wait is not None else ""
        return PublishError(
            f"GitHub {kind} reached while {doing} (HTTP {status}){when}",
            permanent=False,
            retry_after=wait,
        )
    if status == 422 and "visibility" in message.lower():
        return PublishError(f"GitHub refused {doing} (422): {message}: {INTERNAL_HINT}", permanent=True)
    return status_error(
        "GitHub", status, doing, message, scope_hint=SCOPE_HINT, refused=(422,), retried=(408, 409)
    )


class GitHubHost:
    git_username = GIT_USERNAMES[ExportType.GITHUB]

    def __init__(self, req: PublishRequest, settings: PublishSettings) -> None:
        self.api_url = (req.api_url or DEFAULT_API_URL).rstrip("/")
        spacing = settings.github_request_spacing
        self._bound = outbound.bind(req.guard)  # PyGithub's connections go through the policy
        self._token = req.token
        self._app: AppTokens | None = None
        auth: Auth.Auth
        if req.github_app is None:
            auth = Auth.Token(req.token)
        else:
            try:
                self._app = AppTokens(req.github_app, self.api_url, settings)
            except BaseException:
                outbound.unbind(self._bound)
                raise
            auth = InstallationTokenAuth(self._app)
        self._gh = Github(
            auth=auth,
            base_url=self.api_url,
            timeout=max(1, math.ceil(settings.http_timeout)),
            retry=None,
            seconds_between_requests=Consts.DEFAULT_SECONDS_BETWEEN_REQUESTS if spacing else None,
            seconds_between_writes=Consts.DEFAULT_SECONDS_BETWEEN_WRITES if spacing else None,
        )
        self._secondary_hits = req.retries

    def git_password(self) -> str:
        if self._app is not None:
            with self._api("minting an installation token for the push"):
                return self._app.token()
        return self._token

    def secrets(self) -> list[str]:
        return self._app.secrets() if self._app is not None else []

    def _secondary_wait(self) -> float:
        wait = secondary_limit_wait(self._secondary_hits)
        self._secondary_hits += 1
        return wait

    @contextmanager
    def _api(self, doing: str) -> Iterator[None]:
        try:
            yield
        except (PublishError, outbound.Refused):
            raise
        except GithubException as exc:
            raise _api_error(exc, doing, self._secondary_wait) from None
        except Exception as exc:  # timeouts, no connection, a proxy's HTML page ...
            raise transport_error(exc, "GitHub", self.api_url, doing) from None

    def resolve_owner(self, owner: str | None) -> Owner:
        if self._app is not None:
            return self._resolve_app_owner(self._app, owner)
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

    def _resolve_app_owner(self, app: AppTokens, owner: str | None) -> Owner:
        """An installation token has no user (`GET /user` answers 403): the owner is the installation's
        account, or config.owner looked up as an organisation, else as a user."""
        with self._api("finding the app's installation"):
            app.installation_id(owner)
            if owner is None:
                owner = app.installation_owner()
        with self._api(f"looking up organisation {owner!r}"):
            try:
                org = self._gh.get_organization(owner)
                return Owner(org.login, is_user=False, handle=org)
            except GithubException as exc:
                if exc.status != 404:
                    raise
        with self._api(f"looking up user {owner!r}"):
            user = self._gh.get_user(owner)
            return Owner(user.login, is_user=True, handle=user)

    def check_visibility(self, owner: Owner, req: PublishRequest) -> None:
        if self._app is not None and owner.is_user:
            # POST /user/repos takes a user's token; an installation token has no user.
            raise PublishError(
                f"a GitHub App cannot create repositories in the account of user {owner.path}: create "
                f"{owner.path}/{req.name} yourself and set config.ifExists: Adopt, install the app on an "
                "organisation, or use a token",
                permanent=True,
            )
        if req.visibility != "internal":
            return
        if owner.is_user:
            raise PublishError(
                f"visibility internal is not available for {owner.path}, a user: a user's repositories are "
                "private or public; internal needs config.owner, an organisation that belongs to an enterprise",
                permanent=True,
            )
        if urllib.parse.urlsplit(self.api_url).path.rstrip("/").endswith("/api/v3"):
            return  # GitHub Enterprise Server: every organisation belongs to the enterprise
        plan = (owner.handle.raw_data.get("plan") or {}) if isinstance(owner.handle, Organization) else {}
        name = plan.get("name") if isinstance(plan, dict) else None
        # The plan is shown to the organisation's owners only; without it the create request decides.
        if name is not None and name != ENTERPRISE_PLAN:
            raise PublishError(
                f"visibility internal is not available in organisation {owner.path}: it is on GitHub's "
                f"{name!r} plan and does not belong to an enterprise; allowed: private, public",
                permanent=True,
            )

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
                repo = owner.handle.create_repo(req.name, private=private, auto_init=False, **extra)
            else:
                raise TypeError(f"unexpected owner {owner.handle!r}")
            return self._remote(repo)

    def after_first_push(self, repo: RemoteRepository, req: PublishRequest) -> list[str]:
        """Topics (not a create parameter). The first branch pushed to an empty repository
        becomes its default branch on GitHub, so that needs nothing."""
        handle = repo.handle
        if not isinstance(handle, Repository) or not req.topics:
            return []
        try:
            with self._api(f"setting the topics of {repo.full_name}"):
                handle.replace_topics(list(req.topics))
        except PublishError as exc:
            return [f"topics were not set: {exc.message}"]
        return []

    def close(self) -> None:
        try:
            self._gh.close()
            if self._app is not None:
                self._app.close()
        finally:
            outbound.unbind(self._bound)

    # --- pull requests (day two) ---------------------------------------------------------------
    @staticmethod
    def _pull(pr: GhPullRequest) -> PullRequest:
        state = (
            RequestState.MERGED
            if pr.merged_at is not None
            else RequestState.CLOSED
            if pr.state == "closed"
            else RequestState.OPEN
        )
        return PullRequest(
            number=pr.number,
            url=pr.html_url,
            state=state,
            head_sha=pr.head.sha,
            body=pr.body or "",
            draft=bool(pr.draft),
        )

    def _newest(self, repo: RemoteRepository, branch: str) -> GhPullRequest | None:
        handle: Repository = repo.handle  # type: ignore[assignment]
        owner = repo.full_name.partition("/")[0]
        pulls = handle.get_pulls(state="all", head=f"{owner}:{branch}", sort="created", direction="desc")
        return next(iter(pulls), None)

    def read_request(self, full_name: str, number: int) -> PullRequest:
        with self._api(f"reading pull request #{number} of {full_name}"):
            return self._pull(self._gh.withLazy(True).get_repo(full_name).get_pull(number))

    def find_request(self, repo: RemoteRepository, branch: str) -> PullRequest | None:
        with self._api(f"listing the pull requests of {repo.full_name}"):
            pr = self._newest(repo, branch)
            return None if pr is None else self._pull(pr)

    def open_request(
        self, repo: RemoteRepository, branch: str, base: str, text: RequestText
    ) -> tuple[PullRequest, list[str]]:
        handle: Repository = repo.handle  # type: ignore[assignment]
        with self._api(f"opening a pull request in {repo.full_name}"):
            try:
                pr = handle.create_pull(
                    base=base, head=branch, title=text.title, body=text.body, draft=text.draft
                )
            except GithubException as exc:
                if exc.status != 422 or "already exists" not in _api_message(exc.data):
                    raise
                existing = self._newest(repo, branch)  # a restart after the create call
                if existing is None:
                    raise
                return self.edit_request(repo, self._pull(existing), text)
        return self._pull(pr), self._labels(pr, text) + self._people(pr, text)

    def edit_request(
        self, repo: RemoteRepository, request: PullRequest, text: RequestText
    ) -> tuple[PullRequest, list[str]]:
        handle: Repository = repo.handle  # type: ignore[assignment]
        with self._api(f"updating pull request #{request.number} of {repo.full_name}"):
            pr = handle.get_pull(request.number)
            pr.edit(title=text.title, body=text.body)
            pr = handle.get_pull(request.number)
        return self._pull(pr), self._labels(pr, text)

    def close_request(self, repo: RemoteRepository, request: PullRequest, comment: str) -> PullRequest:
        handle: Repository = repo.handle  # type: ignore[assignment]
        with self._api(f"closing pull request #{request.number} of {repo.full_name}"):
            pr = handle.get_pull(request.number)
            pr.create_issue_comment(comment)
            pr.edit(state="closed")
            return self._pull(handle.get_pull(request.number))

    def _labels(self, pr: GhPullRequest, text: RequestText) -> list[str]:
        """The conflict label on or off; a Warning, never a failure."""
        try:
            with self._api(f"labelling pull request #{pr.number}"):
                if text.labels:
                    pr.add_to_labels(*text.labels)
                if CONFLICT_LABEL not in text.labels and any(
                    label.name == CONFLICT_LABEL for label in pr.labels
                ):
                    pr.remove_from_labels(CONFLICT_LABEL)
        except PublishError as exc:
            return [f"pull request #{pr.number}: labels not applied: {exc.message}"]
        return []

    def _people(self, pr: GhPullRequest, text: RequestText) -> list[str]:
        """Assignees and requested reviewers of a new request; each refusal is a Warning."""
        warnings = []
        if text.assignees:
            try:
                with self._api(f"assigning pull request #{pr.number}"):
                    pr.add_to_assignees(*text.assignees)
            except PublishError as exc:
                warnings.append(f"pull request #{pr.number}: assignees not set: {exc.message}")
        if text.reviewers:
            try:
                with self._api(f"requesting reviews of pull request #{pr.number}"):
                    pr.create_review_request(reviewers=list(text.reviewers))
            except PublishError as exc:
                warnings.append(f"pull request #{pr.number}: reviewers not set: {exc.message}")
        return warnings

    @staticmethod
    def _remote(repo: Repository) -> RemoteRepository:
        return RemoteRepository(
            full_name=repo.full_name, clone_url=repo.clone_url, web_url=repo.html_url, handle=repo
        )
