"""Gitea (and Forgejo, which kept its API) through its REST API v1 with requests.

Why requests and not a client library: the Python clients on PyPI are thin, unmaintained or
generated for one old version (giteapy: 2020), and the flow needs eight endpoints. The
calls follow Gitea's swagger (`/api/swagger`, templates/swagger/v1_json.tmpl in v1.26.0):

    GET  /user                        the token's user
    GET  /orgs/{org}                  an organisation owner
    GET  /repos/{owner}/{repo}        find
    POST /user/repos, /orgs/{org}/repos   create (CreateRepoOption: name, description,
                                      private, default_branch, auto_init=false)
    PATCH /repos/{owner}/{repo}       default branch after the first push
    PUT  /repos/{owner}/{repo}/topics topics after the first push
    GET  /repos/{owner}/{repo}/pulls?state=all     the export's request, found by its head branch
    POST /repos/{owner}/{repo}/pulls  open (CreatePullRequestOption: head, base, title, body);
                                      409 "pull request already exists" finds and edits it
    PATCH /repos/{owner}/{repo}/pulls/{index}      title, body, state=closed
    GET/POST /repos/{owner}/{repo}/labels, POST/DELETE .../issues/{index}/labels   the conflict label
    POST /repos/{owner}/{repo}/issues/{index}/comments   why a request is closed

A Gitea request is a draft when its title starts with "WIP:" (the default
`repository.pull-request.WORK_IN_PROGRESS_PREFIXES`): the API has no draft field to set.

API errors become PublishError in one place, `_api_error`. Gitea has no rate limit by default;
429 and 5xx are temporary anyway, honouring Retry-After. A repository is private or public:
there is no internal.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

import requests

from projectgen import outbound
from projectgen.api.v1alpha1.repositoryexport import ExportType, RequestState
from projectgen.export.publish.http import retry_after_from, status_error, transport_error
from projectgen.export.publish.model import (
    GIT_USERNAMES,
    Owner,
    PublishError,
    PublishRequest,
    PublishSettings,
    RemoteRepository,
)
from projectgen.export.update.record import CONFLICT_LABEL, PullRequest, RequestText

WIP_PREFIX = "WIP: "
SCOPE_HINT = "it needs the write:repository and read:user scopes (write:organization for an organisation)"


def _api_message(body: Any) -> str:
    if isinstance(body, dict):
        parts = [str(body.get("message") or "")]
        errors = body.get("errors")
        if isinstance(errors, list):
            parts += [str(e) for e in errors if e]
        return "; ".join(p for p in parts if p)[:500]
    return str(body or "").strip()[:200]


def _api_error(resp: requests.Response, doing: str) -> PublishError:
    """The one mapping from Gitea API errors to what the export reports and how it retries."""
    status = resp.status_code
    try:
        message = _api_message(resp.json())
    except ValueError:
        message = _api_message(resp.text)
    if status == 429:
        wait = retry_after_from(resp.headers, "x-ratelimit-reset")
        when = f"; retry in {wait:.0f}s" if wait is not None else ""
        return PublishError(
            f"Gitea rate limit reached while {doing}{when}", permanent=False, retry_after=wait
        )
    return status_error("Gitea", status, doing, message, scope_hint=SCOPE_HINT, refused=(400, 409, 422))


class GiteaHost:
    git_username = GIT_USERNAMES[ExportType.GITEA]

    def __init__(self, req: PublishRequest, settings: PublishSettings) -> None:
        self._token = req.token
        if not req.api_url:
            raise PublishError("exportType gitea needs config.apiUrl, the Gitea server's URL", permanent=True)
        self.url = req.api_url.rstrip("/").removesuffix("/api/v1")
        self.timeout = settings.http_timeout
        self._session = outbound.session(req.guard)  # checked, pinned, answers capped
        self._session.headers.update({"Authorization": f"token {req.token}", "Accept": "application/json"})

    def _call(
        self, method: str, path: str, doing: str, *, json: Any = None, ok: tuple[int, ...] = (200,)
    ) -> Any:
        """One request; the parsed body on an expected status, None on 404 when 404 is expected."""
        try:
            resp = self._session.request(method, f"{self.url}/api/v1{path}", json=json, timeout=self.timeout)
        except outbound.Refused:
            raise
        except requests.RequestException as exc:
            raise transport_error(exc, "Gitea", self.url, doing) from None
        if resp.status_code not in ok:
            raise _api_error(resp, doing)
        if resp.status_code == 404 or not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            raise transport_error(ValueError("not JSON"), "Gitea", self.url, doing) from None

    @staticmethod
    def _q(part: str) -> str:
        return urllib.parse.quote(part, safe="")

    def git_password(self) -> str:
        return self._token

    def secrets(self) -> list[str]:
        return []  # only the request's token, which the flow redacts already

    def resolve_owner(self, owner: str | None) -> Owner:
        user = self._call("GET", "/user", "reading the token's user")
        if owner is None or str(user["login"]).casefold() == owner.casefold():
            return Owner(str(user["login"]), is_user=True, handle=user)
        org = self._call(
            "GET", f"/orgs/{self._q(owner)}", f"looking up organisation {owner!r}", ok=(200, 404)
        )
        if org is None:
            raise PublishError(
                f"organisation {owner!r} not found or not visible to the token (Gitea creates repositories "
                "for the token's user or an organisation it belongs to)",
                permanent=True,
            )
        return Owner(str(org.get("username") or org.get("name") or owner), is_user=False, handle=org)

    def check_visibility(self, owner: Owner, req: PublishRequest) -> None:
        if req.visibility == "internal":
            raise PublishError(
                f"visibility internal does not exist on Gitea: a repository of {owner.path} is private or public",
                permanent=True,
            )

    def find(self, full_name: str) -> RemoteRepository | None:
        owner, _, name = full_name.partition("/")
        repo = self._call(
            "GET",
            f"/repos/{self._q(owner)}/{self._q(name)}",
            f"looking up repository {full_name}",
            ok=(200, 404),
        )
        return None if repo is None else self._remote(repo)

    def create(self, owner: Owner, req: PublishRequest) -> RemoteRepository:
        body: dict[str, Any] = {
            "name": req.name,
            "private": req.visibility != "public",
            "default_branch": req.default_branch,
            "auto_init": False,
        }
        if req.description:
            body["description"] = req.description
        path = "/user/repos" if owner.is_user else f"/orgs/{self._q(owner.path)}/repos"
        repo = self._call("POST", path, f"creating repository {owner.path}/{req.name}", json=body, ok=(201,))
        return self._remote(repo)

    def after_first_push(self, repo: RemoteRepository, req: PublishRequest) -> list[str]:
        """Default branch (an adopted repository keeps its own otherwise) and topics."""
        owner, _, name = repo.full_name.partition("/")
        path = f"/repos/{self._q(owner)}/{self._q(name)}"
        warnings: list[str] = []
        current = repo.handle.get("default_branch") if isinstance(repo.handle, dict) else None
        if current != req.default_branch:
            try:
                self._call(
                    "PATCH",
                    path,
                    f"setting the default branch of {repo.full_name}",
                    json={"default_branch": req.default_branch},
                )
            except PublishError as exc:
                warnings.append(f"the default branch is not {req.default_branch}: {exc.message}")
        if req.topics:
            try:
                self._call(
                    "PUT",
                    f"{path}/topics",
                    f"setting the topics of {repo.full_name}",
                    json={"topics": list(req.topics)},
                    ok=(204,),
                )
            except PublishError as exc:
                warnings.append(f"topics were not set: {exc.message}")
        return warnings

    def close(self) -> None:
        self._session.close()

    # --- pull requests (day two) ---------------------------------------------------------------
    def _repo_path(self, repo: RemoteRepository) -> str:
        owner, _, name = repo.full_name.partition("/")
        return f"/repos/{self._q(owner)}/{self._q(name)}"

    @staticmethod
    def _request(pr: dict[str, Any]) -> PullRequest:
        state = (
            RequestState.MERGED
            if pr.get("merged")
            else RequestState.CLOSED
            if pr.get("state") == "closed"
            else RequestState.OPEN
        )
        head = pr.get("head") or {}
        return PullRequest(
            number=int(pr["number"]),
            url=str(pr.get("html_url") or ""),
            state=state,
            head_sha=head.get("sha"),
            body=str(pr.get("body") or ""),
            draft=bool(pr.get("draft")) or str(pr.get("title") or "").startswith(WIP_PREFIX.strip()),
        )

    def read_request(self, full_name: str, number: int) -> PullRequest:
        owner, _, name = full_name.partition("/")
        pr = self._call(
            "GET",
            f"/repos/{self._q(owner)}/{self._q(name)}/pulls/{number}",
            f"reading pull request #{number} of {full_name}",
            ok=(200,),
        )
        return self._request(pr)

    def find_request(self, repo: RemoteRepository, branch: str) -> PullRequest | None:
        path = f"{self._repo_path(repo)}/pulls?state=all&sort=recentupdate&limit=50"
        # 404 for a repository without commits yet: it has no requests either.
        pulls = self._call("GET", path, f"listing the pull requests of {repo.full_name}", ok=(200, 404)) or []
        mine = [
            pr
            for pr in pulls
            if (pr.get("head") or {}).get("ref") == branch
            and ((pr.get("head") or {}).get("repo") or {}).get("full_name", repo.full_name) == repo.full_name
        ]
        return self._request(max(mine, key=lambda pr: int(pr["number"]))) if mine else None

    def open_request(
        self, repo: RemoteRepository, branch: str, base: str, text: RequestText
    ) -> tuple[PullRequest, list[str]]:
        body = {"head": branch, "base": base, "title": self._title(text), "body": text.body}
        resp = self._call(
            "POST",
            f"{self._repo_path(repo)}/pulls",
            f"opening a pull request in {repo.full_name}",
            json=body,
            ok=(201, 409),
        )
        found = self.find_request(repo, branch)
        if resp is not None and "number" in resp:
            created = self._request(resp)
        elif found is not None and found.state == RequestState.OPEN:
            return self.edit_request(repo, found, text)  # 409: a restart after the create call
        else:
            raise PublishError(
                f"Gitea refused the pull request from {branch} in {repo.full_name}", permanent=True
            )
        return created, self._labels(repo, created, text) + self._people(repo, created, text)

    def edit_request(
        self, repo: RemoteRepository, request: PullRequest, text: RequestText
    ) -> tuple[PullRequest, list[str]]:
        pr = self._call(
            "PATCH",
            f"{self._repo_path(repo)}/pulls/{request.number}",
            f"updating pull request #{request.number} of {repo.full_name}",
            json={"title": self._title(text), "body": text.body},
            ok=(200, 201),
        )
        edited = self._request(pr)
        return edited, self._labels(repo, edited, text)

    def close_request(self, repo: RemoteRepository, request: PullRequest, comment: str) -> PullRequest:
        path = self._repo_path(repo)
        doing = f"closing pull request #{request.number} of {repo.full_name}"
        self._call(
            "POST", f"{path}/issues/{request.number}/comments", doing, json={"body": comment}, ok=(201,)
        )
        pr = self._call(
            "PATCH", f"{path}/pulls/{request.number}", doing, json={"state": "closed"}, ok=(200, 201)
        )
        return self._request(pr)

    @staticmethod
    def _title(text: RequestText) -> str:
        return f"{WIP_PREFIX}{text.title}" if text.draft else text.title

    def _labels(self, repo: RemoteRepository, request: PullRequest, text: RequestText) -> list[str]:
        """Our label on the request when it has conflicts, off it when not; a Warning on failure."""
        path = self._repo_path(repo)
        try:
            labels = (
                self._call("GET", f"{path}/labels?limit=50", f"listing the labels of {repo.full_name}") or []
            )
            ids = {str(label.get("name")): int(label["id"]) for label in labels}
            for name in text.labels:
                if name not in ids:
                    ours = name == CONFLICT_LABEL
                    made = self._call(
                        "POST",
                        f"{path}/labels",
                        f"creating label {name!r} in {repo.full_name}",
                        json={
                            "name": name,
                            "color": "#d93f0b" if ours else "#0e8a16",
                            "description": "projectgen: merge conflicts" if ours else "projectgen",
                        },
                        ok=(201,),
                    )
                    ids[name] = int(made["id"])
            issue = f"{path}/issues/{request.number}/labels"
            if text.labels:
                self._call(
                    "POST",
                    issue,
                    "labelling the pull request",
                    json={"labels": [ids[n] for n in text.labels]},
                )
            if CONFLICT_LABEL not in text.labels and CONFLICT_LABEL in ids:
                self._call(
                    "DELETE", f"{issue}/{ids[CONFLICT_LABEL]}", "removing the conflict label", ok=(204, 404)
                )
        except PublishError as exc:
            return [f"pull request #{request.number}: labels not applied: {exc.message}"]
        return []

    def _people(self, repo: RemoteRepository, request: PullRequest, text: RequestText) -> list[str]:
        """Assignees and reviewers of a new request; each refusal is a Warning, never a failure."""
        path = f"{self._repo_path(repo)}/pulls/{request.number}"
        calls = [
            ("assignees", "PATCH", path, {"assignees": list(text.assignees)}, (200, 201)),
            ("reviewers", "POST", f"{path}/requested_reviewers", {"reviewers": list(text.reviewers)}, (201,)),
        ]
        warnings = []
        for what, method, url, body, ok in calls:
            if not next(iter(body.values())):
                continue
            try:
                self._call(
                    method, url, f"setting the {what} of pull request #{request.number}", json=body, ok=ok
                )
            except PublishError as exc:
                warnings.append(f"pull request #{request.number}: {what} not set: {exc.message}")
        return warnings

    @staticmethod
    def _remote(repo: dict[str, Any]) -> RemoteRepository:
        return RemoteRepository(
            full_name=str(repo["full_name"]),
            clone_url=str(repo["clone_url"]),
            web_url=str(repo["html_url"]),
            handle=repo,
        )
