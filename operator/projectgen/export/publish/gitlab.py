"""GitLab (gitlab.com or self-managed) through python-gitlab: namespace, project, topics.

API errors become PublishError in one place, `_api_error`. python-gitlab's own retries are
off (`retry_transient_errors=False`, `obey_rate_limit=False` on every call, so a 429 is not
slept on inside the library); publish() retries, honouring Retry-After, within a budget.
python-gitlab drops the headers of an error response, so a session hook keeps the last ones.

What GitLab documents and the flow checks before creating anything:
- a project is never more visible than its group ("public is not allowed in a private group",
  https://docs.gitlab.com/user/public_access/);
- gitlab.com disables internal for new projects (same page);
- `default_branch` on create "requires initialize_with_readme to be true"
  (https://docs.gitlab.com/api/projects/#create-a-project), which we never send: the default
  branch is set with `PUT /projects/:id` right after the first push instead.

Merge requests (day two, https://docs.gitlab.com/api/merge_requests/): `GET .../merge_requests?
source_branch=` finds the export's, `POST` opens it (409 "Another open merge request already exists
for this source branch" finds and edits it), `PUT .../merge_requests/:iid` edits, labels
(`add_labels` / `remove_labels`) and closes (`state_event=close`), `POST .../notes` says why.
A draft is a title starting with "Draft:", as GitLab marks one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import gitlab
import requests
from gitlab.exceptions import GitlabAuthenticationError, GitlabError
from gitlab.v4.objects import CurrentUser, CurrentUserManager, Group, Project, ProjectMergeRequest

from projectgen import outbound
from projectgen.api.v1alpha1.forges import VISIBILITY_RANK, is_gitlab_com
from projectgen.api.v1alpha1.repositoryexport import ExportType, RequestState, TokenType
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

DEFAULT_URL = "https://gitlab.com"
SCOPE_HINT = (
    "it needs the api scope and a role that may create projects in the namespace (Developer or higher)"
)
_NO_LIMIT = {"obey_rate_limit": False}
DRAFT_PREFIX = "Draft: "
_STATES = {"opened": RequestState.OPEN, "merged": RequestState.MERGED}


def _api_message(message: Any) -> str:
    if isinstance(message, dict):
        parts: list[str] = []
        for key, value in message.items():
            values = value if isinstance(value, list) else [value]
            parts.extend(f"{key} {v}" for v in values)
        return "; ".join(parts)[:500]
    if isinstance(message, list):
        return "; ".join(str(m) for m in message)[:500]
    return str(message or "").strip()[:500]


def _api_error(exc: GitlabError, doing: str, headers: dict[str, str]) -> PublishError:
    """The one mapping from GitLab API errors to what the export reports and how it retries."""
    status = exc.response_code or 0
    if not status:
        return PublishError(
            f"GitLab API call failed while {doing}: {type(exc).__name__}; will retry", permanent=False
        )
    message = _api_message(exc.error_message)
    if status == 401 or isinstance(exc, GitlabAuthenticationError):
        return PublishError(REFUSED_401, permanent=True)
    if status == 429 or (
        status == 403 and (headers.get("ratelimit-remaining") == "0" or "retry-after" in headers)
    ):
        wait = retry_after_from(headers, "ratelimit-reset")
        when = f"; retry in {wait:.0f}s" if wait is not None else ""
        return PublishError(
            f"GitLab rate limit reached while {doing} (HTTP {status}){when}",
            permanent=False,
            retry_after=wait,
        )
    return status_error("GitLab", status, doing, message, scope_hint=SCOPE_HINT, refused=(400, 409, 422))


class GitLabHost:
    git_username = GIT_USERNAMES[ExportType.GITLAB]

    def __init__(self, req: PublishRequest, settings: PublishSettings) -> None:
        self._token = req.token
        url = (req.api_url or DEFAULT_URL).rstrip("/")
        self.url = url.removesuffix("/api/v4")
        self._headers: dict[str, str] = {}
        session = outbound.session(req.guard)  # checked, pinned, answers capped
        session.hooks["response"].append(self._remember)
        oauth = req.token_type == TokenType.OAUTH
        self._gl = gitlab.Gitlab(
            url=self.url,
            # An OAuth token goes as `Authorization: Bearer`; access tokens as PRIVATE-TOKEN.
            private_token=None if oauth else req.token,
            oauth_token=req.token if oauth else None,
            retry_transient_errors=False,
            timeout=settings.http_timeout,
            session=session,
        )

    def _remember(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self._headers = {k.lower(): v for k, v in response.headers.items()}

    @contextmanager
    def _api(self, doing: str) -> Iterator[None]:
        self._headers = {}
        try:
            yield
        except (PublishError, outbound.Refused):
            raise
        except GitlabError as exc:
            raise _api_error(exc, doing, self._headers) from None
        except Exception as exc:  # timeouts, no connection, a proxy's HTML page ...
            raise transport_error(exc, "GitLab", self.url, doing) from None

    def _user(self) -> CurrentUser:
        with self._api("reading the token's user"):
            return CurrentUserManager(self._gl).get(**_NO_LIMIT)

    def git_password(self) -> str:
        return self._token

    def secrets(self) -> list[str]:
        return []  # only the request's token, which the flow redacts already

    def resolve_owner(self, owner: str | None) -> Owner:
        if owner is None:
            user = self._user()
            return Owner(user.username, is_user=True, handle=user)
        with self._api(f"looking up group {owner!r}"):
            try:
                group = self._gl.groups.get(owner, **_NO_LIMIT)
                return Owner(group.full_path, is_user=False, handle=group)
            except GitlabError as exc:
                if exc.response_code != 404:
                    raise
        user = self._user()
        if user.username.casefold() == owner.casefold():
            return Owner(user.username, is_user=True, handle=user)
        raise PublishError(f"group {owner!r} not found or not visible to the token", permanent=True)

    def check_visibility(self, owner: Owner, req: PublishRequest) -> None:
        levels = ["private", "internal", "public"]
        why: list[str] = []
        if is_gitlab_com(self.url):
            levels.remove("internal")
            why.append("gitlab.com does not allow internal for new projects")
        group_level = getattr(owner.handle, "visibility", None) if isinstance(owner.handle, Group) else None
        if group_level in VISIBILITY_RANK:
            levels = [v for v in levels if VISIBILITY_RANK[v] <= VISIBILITY_RANK[group_level]]
            why.append(
                f"group {owner.path} is {group_level} and a project is never more visible than its group"
            )
        if req.visibility not in levels:
            raise PublishError(
                f"visibility {req.visibility} is not allowed for {owner.path}/{req.name}: {'; '.join(why)}; "
                f"allowed: {', '.join(levels)}",
                permanent=True,
            )

    def find(self, full_name: str) -> RemoteRepository | None:
        with self._api(f"looking up project {full_name}"):
            try:
                return self._remote(self._gl.projects.get(full_name, **_NO_LIMIT))
            except GitlabError as exc:
                if exc.response_code == 404:
                    return None
                raise

    def create(self, owner: Owner, req: PublishRequest) -> RemoteRepository:
        data: dict[str, Any] = {
            "name": req.name,
            "path": req.name,
            "visibility": str(req.visibility),
            "initialize_with_readme": False,
        }
        if req.description:
            data["description"] = req.description
        if req.topics:
            data["topics"] = list(req.topics)
        if isinstance(owner.handle, Group):
            data["namespace_id"] = owner.handle.id
        with self._api(f"creating project {owner.path}/{req.name}"):
            return self._remote(self._gl.projects.create(data, **_NO_LIMIT))

    def after_first_push(self, repo: RemoteRepository, req: PublishRequest) -> list[str]:
        """The default branch (ignored on create without a README), and the topics of an adopted
        project (a new one got them with the create request)."""
        if not isinstance(repo.handle, Project):
            return []
        warnings: list[str] = []
        try:
            with self._api(f"reading project {repo.full_name}"):
                project = self._gl.projects.get(repo.handle.id, **_NO_LIMIT)
        except PublishError as exc:
            return [f"the default branch and topics were not checked: {exc.message}"]
        if getattr(project, "default_branch", None) != req.default_branch:
            try:
                with self._api(f"setting the default branch of {repo.full_name}"):
                    project.default_branch = req.default_branch
                    project.save(**_NO_LIMIT)
            except PublishError as exc:
                warnings.append(f"the default branch is not {req.default_branch}: {exc.message}")
        if req.topics and sorted(getattr(project, "topics", []) or []) != sorted(req.topics):
            try:
                with self._api(f"setting the topics of {repo.full_name}"):
                    project.topics = list(req.topics)
                    project.save(**_NO_LIMIT)
            except PublishError as exc:
                warnings.append(f"topics were not set: {exc.message}")
        return warnings

    def close(self) -> None:
        self._gl.session.close()

    # --- merge requests (day two) -----------------------------------------------------------------
    @staticmethod
    def _request(mr: ProjectMergeRequest) -> PullRequest:
        return PullRequest(
            number=int(mr.iid),
            url=str(mr.web_url),
            state=_STATES.get(str(mr.state), RequestState.CLOSED),
            head_sha=mr.sha,
            body=str(mr.description or ""),
            draft=bool(getattr(mr, "draft", False)),
        )

    @staticmethod
    def _text(text: RequestText) -> dict[str, Any]:
        return {
            "title": f"{DRAFT_PREFIX}{text.title}" if text.draft else text.title,
            "description": text.body,
        }

    def read_request(self, full_name: str, number: int) -> PullRequest:
        with self._api(f"reading merge request !{number} of {full_name}"):
            project = self._gl.projects.get(full_name, lazy=True)
            return self._request(project.mergerequests.get(number, **_NO_LIMIT))

    def find_request(self, repo: RemoteRepository, branch: str) -> PullRequest | None:
        project: Project = repo.handle  # type: ignore[assignment]
        with self._api(f"listing the merge requests of {repo.full_name}"):
            found = project.mergerequests.list(
                source_branch=branch,
                state="all",
                order_by="created_at",
                sort="desc",
                get_all=False,
                **_NO_LIMIT,
            )
            mine = [mr for mr in found if mr.source_project_id == project.id]
            return self._request(max(mine, key=lambda mr: int(mr.iid))) if mine else None

    def open_request(
        self, repo: RemoteRepository, branch: str, base: str, text: RequestText
    ) -> tuple[PullRequest, list[str]]:
        project: Project = repo.handle  # type: ignore[assignment]
        body = {"source_branch": branch, "target_branch": base, **self._text(text)}
        with self._api(f"opening a merge request in {repo.full_name}"):
            try:
                mr = project.mergerequests.create(body, **_NO_LIMIT)
            except GitlabError as exc:
                existing = self.find_request(repo, branch) if exc.response_code == 409 else None
                if existing is None or existing.state != RequestState.OPEN:
                    raise
                return self.edit_request(repo, existing, text)  # a restart after the create call
        return self._request(mr), self._labels(repo, int(mr.iid), text) + self._people(
            repo, int(mr.iid), text
        )

    def edit_request(
        self, repo: RemoteRepository, request: PullRequest, text: RequestText
    ) -> tuple[PullRequest, list[str]]:
        project: Project = repo.handle  # type: ignore[assignment]
        with self._api(f"updating merge request !{request.number} of {repo.full_name}"):
            project.mergerequests.update(request.number, self._text(text), **_NO_LIMIT)
        warnings = self._labels(repo, request.number, text)
        with self._api(f"reading merge request !{request.number} of {repo.full_name}"):
            mr = project.mergerequests.get(request.number, **_NO_LIMIT)
        return self._request(mr), warnings

    def close_request(self, repo: RemoteRepository, request: PullRequest, comment: str) -> PullRequest:
        project: Project = repo.handle  # type: ignore[assignment]
        with self._api(f"closing merge request !{request.number} of {repo.full_name}"):
            mr = project.mergerequests.get(request.number, lazy=True)
            mr.notes.create({"body": comment}, **_NO_LIMIT)
            project.mergerequests.update(request.number, {"state_event": "close"}, **_NO_LIMIT)
            return self._request(project.mergerequests.get(request.number, **_NO_LIMIT))

    def _labels(self, repo: RemoteRepository, iid: int, text: RequestText) -> list[str]:
        """The conflict label on or off; a Warning, never a failure."""
        project: Project = repo.handle  # type: ignore[assignment]
        change = {"add_labels": ",".join(text.labels)} if text.labels else {}
        if CONFLICT_LABEL not in text.labels:
            change["remove_labels"] = CONFLICT_LABEL
        try:
            with self._api(f"labelling merge request !{iid}"):
                project.mergerequests.update(iid, change, **_NO_LIMIT)
        except PublishError as exc:
            return [f"merge request !{iid}: labels not applied: {exc.message}"]
        return []

    def _people(self, repo: RemoteRepository, iid: int, text: RequestText) -> list[str]:
        """Assignees and reviewers of a new merge request (GitLab takes user IDs: each name is
        looked up); an unknown name, a refusal or a person GitLab drops is a Warning, never a failure."""
        project: Project = repo.handle  # type: ignore[assignment]
        warnings: list[str] = []
        change: dict[str, list[int]] = {}
        asked: dict[str, list[str]] = {}
        for what, names in (("assignees", text.assignees), ("reviewers", text.reviewers)):
            for name in names:
                try:
                    with self._api(f"looking up user {name}"):
                        found = list(self._gl.users.list(username=name, get_all=False, **_NO_LIMIT))
                except PublishError as exc:
                    warnings.append(f"merge request !{iid}: {name}: {exc.message}")
                    continue
                if found:
                    change.setdefault(what[:-1] + "_ids", []).append(int(found[0].id))
                    asked.setdefault(what, []).append(name)
                else:
                    warnings.append(f"merge request !{iid}: no GitLab user {name!r}: not assigned or asked")
        if change:
            try:
                with self._api(f"setting assignees and reviewers of merge request !{iid}"):
                    answer = project.mergerequests.update(iid, change, **_NO_LIMIT)
            except PublishError as exc:
                warnings.append(f"merge request !{iid}: assignees and reviewers not set: {exc.message}")
            else:
                warnings += _dropped(iid, answer, asked)
        return warnings

    @staticmethod
    def _remote(project: Project) -> RemoteRepository:
        return RemoteRepository(
            full_name=project.path_with_namespace,
            clone_url=project.http_url_to_repo,
            web_url=project.web_url,
            handle=project,
        )


def _dropped(iid: int, answer: Any, asked: dict[str, list[str]]) -> list[str]:
    """GitLab drops, without an error, whoever cannot be assigned or asked to review (not a member
    of the project): its answer tells, and whoever configured them should learn it."""
    warnings = []
    for key, names in asked.items():
        if not isinstance(answer, dict) or not isinstance(answer.get(key), list):
            continue  # an answer without the list: nothing to compare
        got = {str(u.get("username", "")).lower() for u in answer[key] if isinstance(u, dict)}
        missing = [n for n in names if n.lower() not in got]
        if missing:
            what = "assigned" if key == "assignees" else "asked to review"
            warnings.append(
                f"merge request !{iid}: GitLab did not take {', '.join(missing)} (not a project member?): "
                f"not {what}"
            )
    return warnings
