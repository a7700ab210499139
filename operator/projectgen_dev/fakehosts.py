"""Loopback stand-ins for the GitHub and GitLab REST APIs, backed by a real git smart-HTTP server.

They answer the requests PyGithub and python-gitlab make to find an owner, look up, create
and tag a repository, with bodies and headers shaped like the real ones (including the
error bodies), and create a bare repository in their own `GitHTTPServer` for each repository
they create, so the push is real. Faults are scripted per (method, path pattern):

    with FakeGitHub(tokens={"t0k"}, orgs=["acme"]) as gh:
        gh.fail_next("POST", "/orgs/*/repos", status=500)           # then the real answer
        gh.fail_next("GET", "/user", drop=True)                      # close without a reply
        gh.fail_next("POST", "/user/repos", drop=True, after=True)   # create, then lose the reply
        gh.fail_next("GET", "/repos/*", status=None, delay=0.5)      # slow, then the real answer
        gh.rate_limit_next("GET", "/user", reset_in=30)

Paths in `calls`, `requests` and fault patterns are relative to the API root (no `/api/v3`
or `/api/v4`) and percent-decoded; patterns are `fnmatch` globs. Stdlib only, but for GitHub
Apps: PyJWT and cryptography (PyGithub's own dependencies) verify the app's RS256 JWTs.
"""

from __future__ import annotations

import fnmatch
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import jwt
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from projectgen_dev.gitserver import GitHTTPServer

_DEFAULT: Any = object()
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass
class Reply:
    status: int
    body: Any = None
    """dict/list -> JSON, str -> text/plain, bytes as is, None -> empty."""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class FakeRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    headers: dict[str, str]
    """Without Authorization / PRIVATE-TOKEN."""


@dataclass
class Fault:
    method: str
    pattern: str
    status: int | None
    body: Any
    headers: dict[str, str]
    delay: float
    drop: bool
    after: bool
    times: int

    def __str__(self) -> str:
        what = (
            "dropped connection"
            if self.drop
            else f"HTTP {self.status}"
            if self.status
            else f"{self.delay}s delay"
        )
        return f"{self.method} {self.pattern}: {what} x{self.times}"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def seed_commit(bare: Path, files: Mapping[str, bytes] | None = None, branch: str = "main") -> str:
    """Commit flat `files` straight into a bare repository (no HTTP); returns the commit."""
    files = files or {"README.md": b"# seeded\n"}
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(bare),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_DIR": str(bare),
        "GIT_AUTHOR_NAME": "Someone Else",
        "GIT_AUTHOR_EMAIL": "someone@example.com",
        "GIT_COMMITTER_NAME": "Someone Else",
        "GIT_COMMITTER_EMAIL": "someone@example.com",
    }

    def git(*args: str, data: bytes = b"") -> str:
        return subprocess.run(
            ["git", *args], input=data, env=env, capture_output=True, check=True
        ).stdout.decode()

    entries = []
    for name, content in sorted(files.items()):
        sha = git("hash-object", "-w", "--stdin", data=content).strip()
        entries.append(f"100644 blob {sha}\t{name}\n")
    tree = git("mktree", data="".join(entries).encode()).strip()
    commit = git("commit-tree", tree, "-m", "seed").strip()
    git("update-ref", f"refs/heads/{branch}", commit)
    return commit


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _any(self) -> None:
        self.server.fake._serve(self)

    do_GET = _any
    do_POST = _any
    do_PUT = _any
    do_PATCH = _any
    do_DELETE = _any


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: _FakeHost) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timeout) closes its end while a slow reply is written: not an error.
        pass


class _FakeHost:
    """What both stand-ins share: HTTP plumbing, token check, fault scripts, a git server."""

    api_prefix = ""
    kind = "host"

    def __init__(self, *, tokens: Iterable[str], root: Path | None = None) -> None:
        self.tokens = set(tokens)
        self._own_root = root is None
        self.root = (
            Path(tempfile.mkdtemp(prefix=f"projectgen-fake{self.kind}-")) if root is None else Path(root)
        )
        self.git = GitHTTPServer(self.root / "git", tokens=self.git_accepts)
        self.calls: list[tuple[str, str]] = []
        self.requests: list[FakeRequest] = []
        self.created: list[str] = []
        self._faults: list[Fault] = []
        self._lock = threading.RLock()
        self._ids = itertools.count(1000)
        self._httpd = _HTTPServer(self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name=f"fake-{self.kind}", daemon=True
        )

    # lifecycle ---------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def api_url(self) -> str:
        return self.base_url + self.api_prefix

    def start(self) -> Self:
        self.git.start()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self.git.stop()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # faults ------------------------------------------------------------------------------
    def fail_next(
        self,
        method: str,
        path: str,
        *,
        status: int | None = 500,
        body: Any = _DEFAULT,
        headers: Mapping[str, str] | None = None,
        delay: float = 0.0,
        drop: bool = False,
        after: bool = False,
        times: int = 1,
    ) -> None:
        """Script the next `times` answers to `method path` (fnmatch pattern, relative to the API root).

        status None: the real answer (with `delay`: a slow one). drop: close the connection without
        a reply. after: do the real work first (e.g. create the repository), then fail or drop.
        """
        if body is _DEFAULT:
            body = self.error_body(status) if status is not None else None
        fault = Fault(method.upper(), path, status, body, dict(headers or {}), delay, drop, after, times)
        with self._lock:
            self._faults.append(fault)

    def clear_faults(self) -> None:
        """Forget every scripted answer not given yet."""
        with self._lock:
            self._faults.clear()

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.method == method and fnmatch.fnmatchcase(path, fault.pattern):
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def unserved_faults(self) -> list[str]:
        """Scripted faults (this host's and its git server's) that no request has met yet.

        A retry test asserts this is empty: a fault that matched nothing proves nothing."""
        with self._lock:
            own = [str(fault) for fault in self._faults]
        return own + [f"git: {fault}" for fault in self.git.unserved_faults()]

    def count(self, method: str, pattern: str) -> int:
        return sum(1 for m, p in self.calls if m == method and fnmatch.fnmatchcase(p, pattern))

    # to be provided by the hosts ---------------------------------------------------------
    def error_body(self, status: int | None) -> Any:
        return {"message": str(status)}

    def token_of(self, headers: Mapping[str, str]) -> str | None:
        """The token a request carries; `headers` has lower-case names."""
        raise NotImplementedError

    def unauthorised(self) -> Reply:
        raise NotImplementedError

    def git_accepts(self, password: str) -> bool:
        """Whether the git server takes `password` (the API's tokens, checked at each request)."""
        return password in self.tokens

    def authorise(self, token: str | None, method: str, parts: list[str]) -> Reply | None:
        """None when `token` may make this request, else the refusal."""
        return None if token is not None and token in self.tokens else self.unauthorised()

    def common_headers(self) -> dict[str, str]:
        return {}

    def route(self, method: str, parts: list[str], query: dict[str, list[str]], body: Any) -> Reply:
        raise NotImplementedError

    # plumbing ----------------------------------------------------------------------------
    def _serve(self, h: _Handler) -> None:
        raw_path, _, qs = h.path.partition("?")
        length = int(h.headers.get("Content-Length") or 0)
        raw_body = h.rfile.read(length) if length else b""
        method = h.command
        if not raw_path.startswith(self.api_prefix + "/"):
            self._send(h, Reply(404, self.error_body(404)))
            return
        rel_raw = raw_path[len(self.api_prefix) :]
        parts = [urllib.parse.unquote(p) for p in rel_raw.strip("/").split("/") if p]
        rel = "/" + "/".join(parts)
        query = urllib.parse.parse_qs(qs)
        try:
            body = json.loads(raw_body) if raw_body else None
        except ValueError:
            body = raw_body.decode("utf-8", "replace")
        hidden = {"authorization", "private-token"}
        with self._lock:
            self.calls.append((method, rel))
            self.requests.append(
                FakeRequest(
                    method, rel, query, body, {k: v for k, v in h.headers.items() if k.lower() not in hidden}
                )
            )
        fault = self._take_fault(method, rel)
        # Credentials are checked on arrival, as a server does before it works slowly on the request.
        token = self.token_of({k.lower(): v for k, v in h.headers.items()})
        with self._lock:
            denied = self.authorise(token, method, parts)
        if fault is not None and fault.delay:
            time.sleep(fault.delay)
        if fault is not None and not fault.after and (fault.drop or fault.status is not None):
            self._fault_reply(h, fault)
            return
        with self._lock:
            if denied is not None:
                reply = denied
            else:
                try:
                    reply = self.route(method, parts, query, body)
                except Exception as exc:
                    reply = Reply(500, {"message": f"fake {self.kind} error: {exc!r}"})
        if fault is not None and fault.after and (fault.drop or fault.status is not None):
            self._fault_reply(h, fault)
            return
        self._send(h, reply)

    def _fault_reply(self, h: _Handler, fault: Fault) -> None:
        if fault.drop:
            h.close_connection = True
            return
        assert fault.status is not None
        self._send(h, Reply(fault.status, fault.body, fault.headers))

    def _send(self, h: _Handler, reply: Reply) -> None:
        headers = self.common_headers()
        if isinstance(reply.body, (dict, list)):
            payload = json.dumps(reply.body).encode()
            headers["Content-Type"] = "application/json; charset=utf-8"
        elif isinstance(reply.body, str):
            payload = reply.body.encode()
            headers["Content-Type"] = "text/plain; charset=utf-8"
        elif isinstance(reply.body, bytes):
            payload = reply.body
        else:
            payload = b""
        headers.update(reply.headers)
        h.send_response(reply.status)
        for name, value in headers.items():
            h.send_header(name, value)
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(payload)

    def _branch_sha(self, full_name: str, branch: str) -> str | None:
        """The head of a branch of a repository the stand-in serves; None when it has none."""
        out = subprocess.run(
            [
                "git",
                "--git-dir",
                str(self.git.repo_path(full_name)),
                "rev-parse",
                "--verify",
                "-q",
                f"refs/heads/{branch}",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        return out.stdout.strip() or None

    def _bare_is_empty(self, full_name: str) -> bool:
        heads = self.git.repo_path(full_name) / "refs" / "heads"
        packed = self.git.repo_path(full_name) / "packed-refs"
        has_loose = heads.exists() and any(p.is_file() for p in heads.rglob("*"))
        has_packed = packed.exists() and " refs/heads/" in packed.read_text()
        return not (has_loose or has_packed)

    def seed(self, full_name: str, files: Mapping[str, bytes] | None = None, branch: str = "main") -> str:
        """Give an existing repository a commit, as if someone had pushed to it."""
        return seed_commit(self.git.repo_path(full_name), files, branch)


# --------------------------------------------------------------------------------------------
# GitHub
# --------------------------------------------------------------------------------------------

_GH_DOCS = "https://docs.github.com/rest"
_GH_NAME_EXISTS = {
    "message": "Repository creation failed.",
    "errors": [
        {
            "resource": "Repository",
            "code": "custom",
            "field": "name",
            "message": "name already exists on this account",
        }
    ],
    "documentation_url": "https://docs.github.com/rest/repos/repos#create-a-repository-for-the-authenticated-user",
    "status": "422",
}


class FakeGitHub(_FakeHost):
    """GitHub.com (`api_url` is the server root) or, with `enterprise=True`, GHES (`/api/v3`)."""

    kind = "github"

    def __init__(
        self,
        *,
        tokens: Iterable[str],
        user: str = "octocat",
        orgs: Iterable[str] = (),
        enterprise: bool = False,
        scopes: str = "repo",
        root: Path | None = None,
    ) -> None:
        super().__init__(tokens=tokens, root=root)
        self.api_prefix = "/api/v3" if enterprise else ""
        self.enterprise = enterprise
        self.scopes = scopes
        self.user: dict[str, Any] = {
            "login": user,
            "id": 1,
            "name": user.title(),
            "email": f"{user}@example.com",
        }
        self.orgs: dict[str, dict[str, Any]] = {}
        self.repos: dict[str, dict[str, Any]] = {}
        self.pulls: dict[str, list[dict[str, Any]]] = {}
        self.labels: dict[str, set[str]] = {}
        self.collaborators: set[str] = {user}
        """Who may be assigned or asked for a review (GitHub's rule: collaborators only)."""
        self.apps: dict[str, dict[str, Any]] = {}
        self.installations: dict[int, dict[str, Any]] = {}
        self.installation_tokens: dict[str, tuple[int, float]] = {}
        """token -> (installation id, expiry as epoch seconds)."""
        self.token_ttl = 3600.0
        """Lifetime of the installation tokens it issues: GitHub's is one hour."""
        self.jwts_seen: list[str] = []
        """Every JWT a request carried (for the token scans)."""
        self._request = threading.local()
        """Per request (each has its own thread): the installation it authenticated as (`actor`)."""
        for org in orgs:
            self.add_org(org)

    # state -------------------------------------------------------------------------------
    def add_org(self, login: str, *, enterprise: bool = False, plan_visible: bool = True) -> None:
        """`enterprise`: the organisation belongs to an enterprise account (GitHub Enterprise Cloud).
        `plan_visible`: the token sees the org's `plan` (GitHub shows it to organisation owners)."""
        with self._lock:
            self.orgs[login.lower()] = {
                "login": login,
                "id": next(self._ids),
                "enterprise": enterprise,
                "plan_visible": plan_visible,
            }

    def add_app(self, app_id: int, public_key_pem: bytes | str, *, slug: str = "projectgen-app") -> None:
        """A GitHub App: JWTs whose `iss` is `app_id` must verify with this RSA public key."""
        key = public_key_pem.encode() if isinstance(public_key_pem, str) else public_key_pem
        with self._lock:
            self.apps[str(app_id)] = {"id": app_id, "slug": slug, "key": load_pem_public_key(key)}

    def install_app(self, app_id: int, account: str) -> int:
        """Install the app on an organisation (one added with `add_org`) or on the user; its ID."""
        with self._lock:
            org = self.orgs.get(account.lower())
            if org is None and account.lower() != self.user["login"].lower():
                raise ValueError(f"no account {account!r}")
            installation = next(self._ids)
            self.installations[installation] = {
                "id": installation,
                "app_id": app_id,
                "account": org["login"] if org else self.user["login"],
                "target_type": "Organization" if org else "User",
            }
            return installation

    def add_repo(
        self, full_name: str, *, private: bool = True, description: str | None = None
    ) -> dict[str, Any]:
        """A repository this export did not create (not counted in `created`)."""
        owner, name = full_name.split("/")
        with self._lock:
            return self._new_repo(owner, name, {"private": private, "description": description})

    def repo(self, full_name: str) -> dict[str, Any]:
        return self.repos[full_name.lower()]

    def _new_repo(self, owner: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        full_name = f"{owner}/{name}"
        private = bool(body.get("private", False))
        visibility = body.get("visibility") or ("private" if private else "public")
        record: dict[str, Any] = {
            "id": next(self._ids),
            "name": name,
            "owner": owner,
            "owner_type": "User" if owner.lower() == self.user["login"].lower() else "Organization",
            "description": body.get("description"),
            "private": visibility != "public",
            "visibility": visibility,
            "topics": [],
            "default_branch": "main",
            "created_at": _now(),
            "request": dict(body),
        }
        self.git.create_bare(full_name, "main")
        self.repos[full_name.lower()] = record
        return record

    # JSON --------------------------------------------------------------------------------
    def _user_json(self) -> dict[str, Any]:
        login = self.user["login"]
        return {
            "login": login,
            "id": self.user["id"],
            "node_id": "MDQ6VXNlcjE=",
            "avatar_url": f"{self.base_url}/avatars/{login}",
            "url": f"{self.api_url}/users/{login}",
            "html_url": f"{self.base_url}/{login}",
            "repos_url": f"{self.api_url}/users/{login}/repos",
            "type": "User",
            "site_admin": False,
            "name": self.user["name"],
            "email": self.user["email"],
            "public_repos": sum(1 for r in self.repos.values() if r["owner"] == login and not r["private"]),
            "created_at": "2011-01-25T18:44:36Z",
            "updated_at": _now(),
        }

    def _owner_json(self, login: str, kind: str) -> dict[str, Any]:
        return {
            "login": login,
            "id": self.user["id"] if kind == "User" else self.orgs[login.lower()]["id"],
            "url": f"{self.api_url}/{'users' if kind == 'User' else 'orgs'}/{login}",
            "html_url": f"{self.base_url}/{login}",
            "type": kind,
            "site_admin": False,
        }

    def _org_json(self, org: Mapping[str, Any]) -> dict[str, Any]:
        login = org["login"]
        return {
            "login": login,
            "id": org["id"],
            "node_id": "MDEyOk9yZ2FuaXphdGlvbjE=",
            "url": f"{self.api_url}/orgs/{login}",
            "repos_url": f"{self.api_url}/orgs/{login}/repos",
            "html_url": f"{self.base_url}/{login}",
            "type": "Organization",
            "description": None,
            "public_repos": 0,
            "created_at": "2015-01-01T00:00:00Z",
            "updated_at": _now(),
            **(
                {"plan": {"name": "enterprise" if org["enterprise"] else "free", "space": 976562499}}
                if org["plan_visible"]
                else {}
            ),
        }

    def _repo_json(self, r: Mapping[str, Any]) -> dict[str, Any]:
        full_name = f"{r['owner']}/{r['name']}"
        host = urllib.parse.urlsplit(self.base_url).netloc
        return {
            "id": r["id"],
            "node_id": f"R_{r['id']}",
            "name": r["name"],
            "full_name": full_name,
            "private": r["private"],
            "visibility": r["visibility"],
            "owner": self._owner_json(r["owner"], r["owner_type"]),
            "html_url": f"{self.base_url}/{full_name}",
            "description": r["description"],
            "fork": False,
            "url": f"{self.api_url}/repos/{full_name}",
            "clone_url": self.git.url(full_name),
            "git_url": f"git://{host}/{full_name}.git",
            "ssh_url": f"git@{host}:{full_name}.git",
            "svn_url": f"{self.base_url}/{full_name}",
            "homepage": None,
            "size": 0 if self._bare_is_empty(full_name) else 1,
            "default_branch": r["default_branch"],
            "topics": list(r["topics"]),
            "archived": False,
            "disabled": False,
            "has_issues": True,
            "has_wiki": True,
            "created_at": r["created_at"],
            "updated_at": _now(),
            "pushed_at": None,
            "permissions": {"admin": True, "maintain": True, "push": True, "triage": True, "pull": True},
        }

    # protocol ----------------------------------------------------------------------------
    def error_body(self, status: int | None) -> Any:
        bodies: dict[int | None, Any] = {
            401: {"message": "Bad credentials", "documentation_url": _GH_DOCS, "status": "401"},
            403: {
                "message": "Resource not accessible by personal access token",
                "documentation_url": "https://docs.github.com/rest/repos/repos#create-an-organization-repository",
                "status": "403",
            },
            404: {"message": "Not Found", "documentation_url": _GH_DOCS, "status": "404"},
            422: _GH_NAME_EXISTS,
            429: {"message": "API rate limit exceeded", "documentation_url": _GH_DOCS, "status": "429"},
            500: {"message": "Server Error", "status": "500"},
            502: "<html><body><h1>502 Bad Gateway</h1></body></html>",
            503: {"message": "Service Unavailable", "status": "503"},
        }
        return bodies.get(status, {"message": f"HTTP {status}", "status": str(status)})

    def rate_limit_next(self, method: str, path: str, *, reset_in: float = 60, times: int = 1) -> None:
        """GitHub's primary rate limit: 403, X-RateLimit-Remaining: 0 and the reset time."""
        body = {
            "message": "API rate limit exceeded for user ID 1. If you reach out to GitHub Support for help, "
            "please include the request ID 0000:1111:2222:3333:4444.",
            "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
            "status": "403",
        }
        headers = {
            "X-RateLimit-Limit": "5000",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Used": "5000",
            "X-RateLimit-Reset": str(int(time.time() + reset_in)),
            "X-RateLimit-Resource": "core",
        }
        self.fail_next(method, path, status=403, body=body, headers=headers, times=times)

    def secondary_rate_limit_next(
        self, method: str, path: str, *, retry_after: int | None = 60, times: int = 1
    ) -> None:
        """GitHub's secondary rate limit: 403, with Retry-After or (retry_after None) without.

        Without it the reply still carries the primary window's headers, X-RateLimit-Remaining
        above 0 and X-RateLimit-Reset up to an hour away, as GitHub's do: a client must not wait
        for that reset ("If the retry-after response header is not present and the
        x-ratelimit-remaining header is not 0, wait at least one minute", docs.github.com
        rest/using-the-rest-api/best-practices-for-using-the-rest-api)."""
        body = {
            "message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. "
            "If you reach out to GitHub Support for help, please include the request ID 0000:1111:2222:3333:4444.",
            "documentation_url": "https://docs.github.com/free-pro-team@latest/rest/overview/rate-limits-for-the-rest-api"
            "#about-secondary-rate-limits",
            "status": "403",
        }
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        self.fail_next(method, path, status=403, body=body, headers=headers, times=times)

    def token_of(self, headers: Mapping[str, str]) -> str | None:
        scheme, _, value = (headers.get("authorization") or "").partition(" ")
        return value.strip() if scheme.lower() in ("token", "bearer") else None

    def unauthorised(self) -> Reply:
        return Reply(401, self.error_body(401))

    # GitHub Apps -------------------------------------------------------------------------
    # docs.github.com/apps/creating-github-apps/authenticating-with-a-github-app/generating-a-json-web-token-jwt-for-a-github-app:
    # RS256; iat "60 seconds in the past" is advised for clock drift; exp "no more than 10 minutes
    # into the future"; iss the app's ID (or client ID). .../generating-an-installation-access-token-for-a-github-app:
    # the token "will expire after 1 hour"; an expired one is refused like any bad token (401).
    def _jwt_app(self, token: str) -> tuple[dict[str, Any] | None, str]:
        """The app a JWT authenticates, or None and GitHub's message."""
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return None, "A JSON web token could not be decoded"
        app = self.apps.get(str(claims.get("iss")))
        if app is None:
            return None, "Integration not found"
        if header.get("alg") != "RS256":
            return None, "A JSON web token could not be decoded"
        now = time.time()
        exp, iat = claims.get("exp"), claims.get("iat")
        if not isinstance(iat, int) or iat > now + 60:
            return (
                None,
                "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued",
            )
        if not isinstance(exp, int) or exp <= now:
            return None, (
                "'Expiration time' claim ('exp') must be a numeric value representing the future time at "
                "which the assertion expires"
            )
        if exp > now + 600 or exp - iat > 660:
            return None, "'Expiration time' claim ('exp') is too far in the future"
        try:
            jwt.decode(
                token,
                key=app["key"],
                algorithms=["RS256"],
                options={"verify_exp": False, "verify_iat": False},
            )
        except jwt.PyJWTError:
            return None, "A JSON web token could not be decoded"
        return app, ""

    def _installation_of(self, token: str) -> int | None:
        entry = self.installation_tokens.get(token)
        if entry is None or entry[1] <= time.time():
            return None
        return entry[0]

    def git_accepts(self, password: str) -> bool:
        with self._lock:
            return password in self.tokens or self._installation_of(password) is not None

    @property
    def _actor(self) -> int | None:
        """The installation (or, negative, the app) the current request authenticated as; None: a user."""
        actor: int | None = getattr(self._request, "actor", None)
        return actor

    def authorise(self, token: str | None, method: str, parts: list[str]) -> Reply | None:
        self._request.actor = None
        app_route = parts[:1] == ["app"] or (
            len(parts) == 3 and parts[0] in ("orgs", "users") and parts[2] == "installation"
        )
        if token is not None and token.count(".") == 2 and token not in self.tokens:
            self.jwts_seen.append(token)
            app, problem = self._jwt_app(token)
            if app is None:
                return Reply(401, {"message": problem, "documentation_url": _GH_DOCS, "status": "401"})
            if not app_route:
                return Reply(
                    403, {"message": "Resource not accessible by integration", "documentation_url": _GH_DOCS}
                )
            self._request.actor = -int(app["id"])  # the app itself
            return None
        if app_route:  # only a JWT authenticates as the app
            return Reply(
                401, {"message": "A JSON web token could not be decoded", "documentation_url": _GH_DOCS}
            )
        if token is not None and token in self.installation_tokens:
            installation = self._installation_of(token)
            if installation is None:  # expired
                return self.unauthorised()
            self._request.actor = installation
            return None
        return super().authorise(token, method, parts)

    def _installation_json(self, inst: Mapping[str, Any]) -> dict[str, Any]:
        login = inst["account"]
        return {
            "id": inst["id"],
            "app_id": inst["app_id"],
            "target_type": inst["target_type"],
            "account": self._owner_json(login, inst["target_type"]),
            "access_tokens_url": f"{self.api_url}/app/installations/{inst['id']}/access_tokens",
            "repository_selection": "all",
            "permissions": {"administration": "write", "contents": "write", "metadata": "read"},
            "events": [],
            "created_at": "2024-01-01T00:00:00Z",
            "updated_at": _now(),
            "single_file_name": None,
        }

    def _app_route(self, method: str, parts: list[str]) -> Reply:
        app_id = -(self._actor or 0)
        mine = {i: inst for i, inst in self.installations.items() if inst["app_id"] == app_id}
        match (method, parts):
            case ("GET", [("orgs" | "users") as kind, login, "installation"]):
                wanted = "Organization" if kind == "orgs" else "User"
                for inst in mine.values():
                    if inst["account"].lower() == login.lower() and inst["target_type"] == wanted:
                        return Reply(200, self._installation_json(inst))
            case ("GET", ["app", "installations", number]) if number.isdigit() and int(number) in mine:
                return Reply(200, self._installation_json(mine[int(number)]))
            case ("POST", ["app", "installations", number, "access_tokens"]) if (
                number.isdigit() and int(number) in mine
            ):
                token = "ghs_" + uuid.uuid4().hex + uuid.uuid4().hex[:4]
                expires = time.time() + self.token_ttl
                self.installation_tokens[token] = (int(number), expires)
                stamp = datetime.fromtimestamp(expires, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                return Reply(
                    201,
                    {
                        "token": token,
                        "expires_at": stamp,
                        "permissions": {"administration": "write", "contents": "write", "metadata": "read"},
                        "repository_selection": "all",
                    },
                )
        return Reply(404, self.error_body(404))

    def issued_tokens(self) -> list[str]:
        """Every installation token issued so far (for the token scans)."""
        with self._lock:
            return list(self.installation_tokens)

    def common_headers(self) -> dict[str, str]:
        return {
            "Server": "GitHub.com",
            "X-GitHub-Media-Type": "github.v3; format=json",
            "X-GitHub-Api-Version-Selected": "2022-11-28",
            "X-GitHub-Request-Id": uuid.uuid4().hex[:20].upper(),
            "X-OAuth-Scopes": self.scopes,
            "X-RateLimit-Limit": "5000",
            "X-RateLimit-Remaining": str(max(0, 5000 - len(self.calls))),
            "X-RateLimit-Reset": str(int(time.time()) + 3600),
            "X-RateLimit-Used": str(len(self.calls)),
            "X-RateLimit-Resource": "core",
        }

    def route(self, method: str, parts: list[str], query: dict[str, list[str]], body: Any) -> Reply:
        if self._actor is not None and self._actor < 0:
            return self._app_route(method, parts)
        if self._actor is not None and parts[:1] == ["user"]:
            # An installation token is no user: GET /user and POST /user/repos are for user tokens.
            return Reply(
                403, {"message": "Resource not accessible by integration", "documentation_url": _GH_DOCS}
            )
        match (method, parts):
            case ("GET", ["user"]):
                return Reply(200, self._user_json())
            case ("GET", ["users", login]) if login.lower() == self.user["login"].lower():
                return Reply(200, self._user_json())
            case ("GET", ["orgs", org]) if org.lower() in self.orgs:
                return Reply(200, self._org_json(self.orgs[org.lower()]))
            case ("POST", ["user", "repos"]):
                return self._create(self.user["login"], body)
            case ("POST", ["orgs", org, "repos"]) if org.lower() in self.orgs:
                return self._create(self.orgs[org.lower()]["login"], body)
            case ("GET", ["repos", owner, name]) if f"{owner}/{name}".lower() in self.repos:
                return Reply(200, self._repo_json(self.repos[f"{owner}/{name}".lower()]))
            case ("GET", ["repos", owner, name, "topics"]) if f"{owner}/{name}".lower() in self.repos:
                return Reply(200, {"names": self.repos[f"{owner}/{name}".lower()]["topics"]})
            case ("PUT", ["repos", owner, name, "topics"]) if f"{owner}/{name}".lower() in self.repos:
                names = (body or {}).get("names")
                if not isinstance(names, list) or not all(
                    isinstance(n, str) and re.fullmatch(r"[a-z0-9][a-z0-9-]{0,49}", n) for n in names
                ):
                    return Reply(
                        422, {"message": "Invalid request.", "documentation_url": _GH_DOCS, "status": "422"}
                    )
                self.repos[f"{owner}/{name}".lower()]["topics"] = list(names)
                return Reply(200, {"names": names})
            case (_, ["repos", owner, name, ("pulls" | "issues"), *rest]) if (
                f"{owner}/{name}".lower() in self.repos
            ):
                return self._pulls_route(method, f"{owner}/{name}", parts[3], rest, query, body)
        return Reply(404, self.error_body(404))

    # Pull requests, as api.github.com.yaml describes them: pulls/list (state, head=owner:branch),
    # pulls/create (title, head, base, body, draft; 422 "A pull request already exists for
    # owner:branch."), pulls/get, pulls/update (title, body, state), issues/add-labels (a JSON
    # array of names; missing labels are created), issues/remove-label, issues/create-comment.
    def _pull_json(self, full_name: str, pr: Mapping[str, Any]) -> dict[str, Any]:
        sha = self._branch_sha(full_name, pr["head"])
        url = f"{self.api_url}/repos/{full_name}/pulls/{pr['number']}"
        return {
            "id": pr["number"] + 1000,
            "number": pr["number"],
            "url": url,
            "issue_url": f"{self.api_url}/repos/{full_name}/issues/{pr['number']}",
            "html_url": f"{self.base_url}/{full_name}/pull/{pr['number']}",
            "state": pr["state"],
            "title": pr["title"],
            "body": pr["body"],
            "draft": pr["draft"],
            "merged": pr["merged_at"] is not None,
            "merged_at": pr["merged_at"],
            "labels": [{"name": n} for n in pr["labels"]],
            "assignees": [{"login": n} for n in pr.get("assignees", [])],
            "requested_reviewers": [{"login": n} for n in pr.get("requested_reviewers", [])],
            "head": {"ref": pr["head"], "sha": sha, "repo": {"full_name": full_name}},
            "base": {"ref": pr["base"], "repo": {"full_name": full_name}},
        }

    def _pulls_route(
        self, method: str, full_name: str, kind: str, rest: list[str], query: dict[str, list[str]], body: Any
    ) -> Reply:
        pulls: list[dict[str, Any]] = self.pulls.setdefault(full_name.lower(), [])
        owner = full_name.split("/")[0]
        by_number = {pr["number"]: pr for pr in pulls}
        pr = by_number.get(int(rest[0])) if rest and rest[0].isdigit() else None
        match (method, kind, rest):
            case ("GET", "pulls", []):
                state = (query.get("state") or ["open"])[0]
                head = (query.get("head") or [""])[0]
                found = [
                    self._pull_json(full_name, p)
                    for p in sorted(pulls, key=lambda p: -p["number"])
                    if (state == "all" or p["state"] == state)
                    and (not head or f"{owner}:{p['head']}" == head)
                ]
                return Reply(200, found)
            case ("POST", "pulls", []):
                if not isinstance(body, dict) or not all(
                    isinstance(body.get(k), str) for k in ("head", "base")
                ):
                    return Reply(422, {"message": "Validation Failed", "status": "422"})
                if any(p["head"] == body["head"] and p["state"] == "open" for p in pulls):
                    err = {
                        "resource": "PullRequest",
                        "code": "custom",
                        "message": f"A pull request already exists for {owner}:{body['head']}.",
                    }
                    return Reply(422, {"message": "Validation Failed", "errors": [err], "status": "422"})
                record = {
                    "number": len(pulls) + 1,
                    "state": "open",
                    "title": body.get("title") or "",
                    "body": body.get("body"),
                    "draft": bool(body.get("draft")),
                    "merged_at": None,
                    "labels": [],
                    "comments": [],
                    "head": body["head"],
                    "base": body["base"],
                }
                pulls.append(record)
                return Reply(201, self._pull_json(full_name, record))
            case ("GET", "pulls", [_]) if pr is not None:
                return Reply(200, self._pull_json(full_name, pr))
            case ("PATCH", "pulls", [_]) if pr is not None and isinstance(body, dict):
                for key in ("title", "body"):
                    if key in body:
                        pr[key] = body[key]
                if body.get("state") in ("open", "closed"):
                    pr["state"] = body["state"]
                return Reply(200, self._pull_json(full_name, pr))
            case ("POST", "issues", [_, "labels"]) if pr is not None:
                names = body if isinstance(body, list) else (body or {}).get("labels") or []
                pr["labels"] += [n for n in names if n not in pr["labels"]]
                self.labels.setdefault(full_name.lower(), set()).update(names)
                return Reply(200, [{"name": n} for n in pr["labels"]])
            case ("DELETE", "issues", [_, "labels", label]) if pr is not None:
                if label not in pr["labels"]:
                    return Reply(404, {"message": "Label does not exist", "status": "404"})
                pr["labels"].remove(label)
                return Reply(200, [{"name": n} for n in pr["labels"]])
            case ("POST", "issues", [_, "assignees"]) if pr is not None:
                # GitHub ignores, silently, whoever cannot be assigned (docs: "Add assignees").
                names = [n for n in (body or {}).get("assignees") or [] if n in self.collaborators]
                pr["assignees"] = [*pr.get("assignees", []), *names]
                return Reply(201, self._pull_json(full_name, pr))
            case ("POST", "pulls", [_, "requested_reviewers"]) if pr is not None:
                names = (body or {}).get("reviewers") or []
                if any(n not in self.collaborators for n in names):
                    message = (
                        "Reviews may only be requested from collaborators. One or more of the users or teams "
                        f"you specified is not a collaborator of the {full_name} repository."
                    )
                    return Reply(422, {"message": message, "status": "422"})
                pr["requested_reviewers"] = [*pr.get("requested_reviewers", []), *names]
                return Reply(201, self._pull_json(full_name, pr))
            case ("POST", "issues", [_, "comments"]) if pr is not None:
                pr["comments"].append((body or {}).get("body"))
                return Reply(201, {"id": len(pr["comments"]), "body": (body or {}).get("body")})
        return Reply(404, self.error_body(404))

    def merge_pull(self, full_name: str, number: int) -> None:
        """Mark a request merged, as the web UI's merge button would (the commit is the test's)."""
        with self._lock:
            pr = next(p for p in self.pulls[full_name.lower()] if p["number"] == number)
            pr["state"], pr["merged_at"] = "closed", _now()

    def _create(self, owner: str, body: Any) -> Reply:
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            return Reply(
                400, {"message": "Problems parsing JSON", "documentation_url": _GH_DOCS, "status": "400"}
            )
        name = body["name"]
        if not _NAME_RE.match(name) or name in (".", ".."):
            err = {"resource": "Repository", "code": "custom", "field": "name", "message": "name is invalid"}
            return Reply(422, {"message": "Repository creation failed.", "errors": [err], "status": "422"})
        if f"{owner}/{name}".lower() in self.repos:
            return Reply(422, _GH_NAME_EXISTS)
        visibility = body.get("visibility")
        if visibility is not None and visibility not in ("public", "private", "internal"):
            return Reply(422, {"message": "Validation Failed", "status": "422"})
        if visibility == "internal" and owner == self.user["login"]:
            return Reply(
                422, {"message": "Only organization-owned repositories can be internal.", "status": "422"}
            )
        # api.github.com.yaml, POST /orgs/{org}/repos: visibility enum [public, private]; internal
        # only for organisations of an enterprise (GHEC), and on GHES (`enterprise=True`) for all.
        org = self.orgs.get(owner.lower())
        if visibility == "internal" and org is not None and not (self.enterprise or org["enterprise"]):
            err = {"resource": "Repository", "code": "invalid", "field": "visibility"}
            return Reply(422, {"message": "Validation Failed", "errors": [err], "status": "422"})
        record = self._new_repo(owner, name, body)
        self.created.append(f"{owner}/{name}")
        return Reply(201, self._repo_json(record))


# --------------------------------------------------------------------------------------------
# GitLab
# --------------------------------------------------------------------------------------------

_GL_RANK = {"private": 0, "internal": 1, "public": 2}
_GL_SLUG_RE = re.compile(r"[A-Za-z0-9]+([._-][A-Za-z0-9]+)*")
_GL_TAKEN = {
    "message": {
        "project_namespace.name": ["has already been taken"],
        "name": ["has already been taken"],
        "path": ["has already been taken"],
    }
}


class FakeGitLab(_FakeHost):
    """GitLab's REST API v4 at `<api_url>/api/v4`; `api_url` is what python-gitlab wants as `url`."""

    kind = "gitlab"
    api_prefix = "/api/v4"

    def __init__(
        self,
        *,
        tokens: Iterable[str],
        user: str = "root",
        groups: Iterable[str] = (),
        gitlab_com: bool = False,
        oauth_tokens: Iterable[str] = (),
        root: Path | None = None,
    ) -> None:
        """`groups` are private, as GitLab's default; add_group() makes others. `gitlab_com`:
        behave like gitlab.com, where internal is disabled for new projects. `oauth_tokens`: OAuth 2.0
        access tokens, accepted only as `Authorization: Bearer` (docs.gitlab.com api/rest/authentication:
        PRIVATE-TOKEN is for personal, project and group access tokens), and by git as `oauth2:<token>`."""
        self.oauth_tokens = set(oauth_tokens)
        super().__init__(tokens=[*tokens, *self.oauth_tokens], root=root)
        self.gitlab_com = gitlab_com
        self.instance_default_branch = "main"
        self.user: dict[str, Any] = {"id": 1, "username": user, "name": user.title(), "namespace_id": 1}
        self.namespaces: dict[int, dict[str, Any]] = {
            1: {"id": 1, "name": user, "path": user, "kind": "user", "full_path": user, "parent_id": None}
        }
        self.projects: dict[str, dict[str, Any]] = {}
        # Other users of the instance: id -> record; "member": may be assigned to, and review, merge
        # requests of this instance's projects (one flag for all projects: enough for what is tested).
        self.users: dict[int, dict[str, Any]] = {1: {**self.user, "member": True}}
        for group in groups:
            self.add_group(group)

    @property
    def api_url(self) -> str:
        return self.base_url

    # state -------------------------------------------------------------------------------
    def add_user(self, username: str, *, member: bool = True) -> int:
        """Another user of the instance; `member`: of the projects (else GitLab drops them, silently,
        from a merge request's assignees and reviewers: MergeRequests::UpdateService filters both to
        users who can read the merge request)."""
        with self._lock:
            uid = max(self.users) + 1
            self.users[uid] = {"id": uid, "username": username, "name": username.title(), "member": member}
            return uid

    def _basic_user(self, uid: int) -> dict[str, Any]:
        u = self.users[uid]
        return {
            "id": uid,
            "username": u["username"],
            "name": u["name"],
            "state": "active",
            "locked": False,
            "avatar_url": None,
            "web_url": f"{self.base_url}/{u['username']}",
        }

    def add_group(self, full_path: str, *, visibility: str = "private") -> dict[str, Any]:
        """The group and its missing parents, with `visibility` (a parent is at least as visible)."""
        with self._lock:
            parent: dict[str, Any] | None = None
            segments = full_path.split("/")
            for i in range(len(segments)):
                path = "/".join(segments[: i + 1])
                ns = self._namespace(path)
                if ns is None:
                    nid = next(self._ids)
                    ns = {
                        "id": nid,
                        "name": segments[i],
                        "path": segments[i],
                        "kind": "group",
                        "full_path": path,
                        "parent_id": parent["id"] if parent else None,
                        "visibility": visibility,
                    }
                    self.namespaces[nid] = ns
                elif _GL_RANK[ns["visibility"]] < _GL_RANK[visibility]:
                    ns["visibility"] = visibility
                parent = ns
            assert parent is not None
            return parent

    def add_project(self, full_path: str, *, visibility: str = "private") -> dict[str, Any]:
        """A project this export did not create (not counted in `created`)."""
        ns_path, _, name = full_path.rpartition("/")
        ns = self._namespace(ns_path) or self.add_group(ns_path)
        with self._lock:
            return self._new_project(ns, {"name": name, "path": name, "visibility": visibility})

    def project(self, full_path: str) -> dict[str, Any]:
        return self.projects[full_path.lower()]

    def _namespace(self, ref: str) -> dict[str, Any] | None:
        if ref.isdigit():
            return self.namespaces.get(int(ref))
        return next((n for n in self.namespaces.values() if n["full_path"].lower() == ref.lower()), None)

    def _project(self, ref: str) -> dict[str, Any] | None:
        if ref.isdigit():
            return next((p for p in self.projects.values() if p["id"] == int(ref)), None)
        return self.projects.get(ref.lower())

    def _new_project(self, ns: Mapping[str, Any], body: Mapping[str, Any]) -> dict[str, Any]:
        path = body.get("path") or body["name"]
        full_path = f"{ns['full_path']}/{path}"
        # "default_branch: ... Requires initialize_with_readme to be true." (docs.gitlab.com
        # api/projects, Create a project): without a README the instance default applies.
        readme = bool(body.get("initialize_with_readme"))
        branch = (body.get("default_branch") if readme else None) or self.instance_default_branch
        record: dict[str, Any] = {
            "id": next(self._ids),
            "name": body.get("name") or path,
            "path": path,
            "namespace_id": ns["id"],
            "full_path": full_path,
            "description": body.get("description"),
            "visibility": body.get("visibility") or "private",
            "topics": list(body.get("topics") or []),
            "default_branch": branch,
            "created_at": _now(),
            "request": dict(body),
        }
        self.git.create_bare(full_path, branch)
        self.projects[full_path.lower()] = record
        return record

    # JSON --------------------------------------------------------------------------------
    def _user_json(self) -> dict[str, Any]:
        name = self.user["username"]
        return {
            "id": self.user["id"],
            "username": name,
            "name": self.user["name"],
            "state": "active",
            "locked": False,
            "avatar_url": f"{self.base_url}/uploads/-/system/user/avatar/1/avatar.png",
            "web_url": f"{self.base_url}/{name}",
            "created_at": "2012-05-23T08:00:58Z",
            "bio": "",
            "public_email": None,
            "email": f"{name}@example.com",
            "is_admin": False,
            "can_create_group": True,
            "can_create_project": True,
            "two_factor_enabled": False,
            "external": False,
            "private_profile": False,
        }

    def _namespace_json(self, ns: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "id": ns["id"],
            "name": ns["name"],
            "path": ns["path"],
            "kind": ns["kind"],
            "full_path": ns["full_path"],
            "parent_id": ns["parent_id"],
            "avatar_url": None,
            "web_url": f"{self.base_url}/{'groups/' if ns['kind'] == 'group' else ''}{ns['full_path']}",
        }

    def _group_json(self, ns: Mapping[str, Any]) -> dict[str, Any]:
        return {
            **self._namespace_json(ns),
            "description": "",
            "visibility": ns["visibility"],
            "full_name": " / ".join(ns["full_path"].split("/")),
            "web_url": f"{self.base_url}/groups/{ns['full_path']}",
            "created_at": "2020-01-01T00:00:00Z",
            "projects": [],
            "shared_projects": [],
        }

    def _project_json(self, p: Mapping[str, Any]) -> dict[str, Any]:
        ns = self.namespaces[p["namespace_id"]]
        host = urllib.parse.urlsplit(self.base_url).netloc
        data = {
            "id": p["id"],
            "description": p["description"],
            "name": p["name"],
            "name_with_namespace": " / ".join([*ns["full_path"].split("/"), p["name"]]),
            "path": p["path"],
            "path_with_namespace": p["full_path"],
            "created_at": p["created_at"],
            "default_branch": p["default_branch"],
            "tag_list": list(p["topics"]),
            "topics": list(p["topics"]),
            "ssh_url_to_repo": f"git@{host}:{p['full_path']}.git",
            "http_url_to_repo": self.git.url(p["full_path"]),
            "web_url": f"{self.base_url}/{p['full_path']}",
            "readme_url": None,
            "avatar_url": None,
            "forks_count": 0,
            "star_count": 0,
            "last_activity_at": _now(),
            "namespace": self._namespace_json(ns),
            "visibility": p["visibility"],
            "empty_repo": self._bare_is_empty(p["full_path"]),
            "archived": False,
            "container_registry_enabled": True,
            "issues_enabled": True,
            "merge_requests_enabled": True,
            "wiki_enabled": True,
            "creator_id": self.user["id"],
            "permissions": {"project_access": {"access_level": 50}, "group_access": None},
        }
        if ns["kind"] == "user":
            data["owner"] = {
                "id": self.user["id"],
                "username": self.user["username"],
                "name": self.user["name"],
            }
        return data

    # protocol ----------------------------------------------------------------------------
    def error_body(self, status: int | None) -> Any:
        bodies: dict[int | None, Any] = {
            400: _GL_TAKEN,
            401: {"message": "401 Unauthorized"},
            403: {"message": "403 Forbidden"},
            404: {"message": "404 Not Found"},
            429: "Retry later\n",
            500: {"message": "500 Internal Server Error"},
            502: "<html><body><h1>502 Bad Gateway</h1></body></html>",
            503: {"message": "503 Service Unavailable"},
        }
        return bodies.get(status, {"message": f"{status}"})

    def token_of(self, headers: Mapping[str, str]) -> str | None:
        private = headers.get("private-token")
        if private:
            return None if private in self.oauth_tokens else private
        scheme, _, value = (headers.get("authorization") or "").partition(" ")
        return value.strip() if scheme.lower() == "bearer" else None

    def unauthorised(self) -> Reply:
        return Reply(401, self.error_body(401))

    def common_headers(self) -> dict[str, str]:
        return {
            "Server": "nginx",
            "X-Request-Id": uuid.uuid4().hex.upper()[:26],
            "X-Gitlab-Meta": json.dumps({"correlation_id": uuid.uuid4().hex, "version": "1"}),
            "RateLimit-Limit": "2000",
            "RateLimit-Remaining": str(max(0, 2000 - len(self.calls))),
            "RateLimit-Reset": str(int(time.time()) + 60),
        }

    def route(self, method: str, parts: list[str], query: dict[str, list[str]], body: Any) -> Reply:
        match (method, parts):
            case ("GET", ["user"]):
                return Reply(200, self._user_json())
            case ("GET", ["users"]):
                # docs.gitlab.com api/users: "?username=" finds one user, case-insensitively.
                wanted = (query.get("username") or [""])[0].lower()
                found = [
                    self._basic_user(i) for i, u in self.users.items() if u["username"].lower() == wanted
                ]
                return Reply(200, found)
            case ("GET", ["groups", ref]):
                ns = self._namespace(ref)
                if ns is None or ns["kind"] != "group":
                    return Reply(404, {"message": "404 Group Not Found"})
                return Reply(200, self._group_json(ns))
            case ("GET", ["namespaces"]):
                search = (query.get("search") or [""])[0].lower()
                found = [
                    self._namespace_json(n)
                    for n in self.namespaces.values()
                    if search in n["full_path"].lower()
                ]
                return Reply(200, found)
            case ("GET", ["namespaces", ref]):
                ns = self._namespace(ref)
                if ns is None:
                    return Reply(404, {"message": "404 Namespace Not Found"})
                return Reply(200, self._namespace_json(ns))
            case ("POST", ["projects"]):
                return self._create(body)
            case ("GET", ["projects", ref]):
                p = self._project(ref)
                if p is None:
                    return Reply(404, {"message": "404 Project Not Found"})
                return Reply(200, self._project_json(p))
            case ("PUT", ["projects", ref]):
                p = self._project(ref)
                if p is None:
                    return Reply(404, {"message": "404 Project Not Found"})
                for key in ("description", "visibility", "default_branch"):
                    if isinstance(body, dict) and key in body:
                        p[key] = body[key]
                if isinstance(body, dict) and "topics" in body:
                    p["topics"] = list(body["topics"] or [])
                return Reply(200, self._project_json(p))
            case (_, ["projects", ref, "merge_requests", *rest]) if self._project(ref) is not None:
                return self._mr_route(method, self._project(ref) or {}, rest, query, body)
        return Reply(404, {"message": "404 Not Found"})

    # Merge requests, as docs.gitlab.com/api/merge_requests describes them: list (source_branch,
    # state), create (source_branch, target_branch, title, description, labels; 409 "Another open
    # merge request already exists for this source branch: !N"), get, update (title, description,
    # add_labels, remove_labels, state_event), notes. A draft is a title starting with "Draft:".
    def _mr_json(self, p: Mapping[str, Any], mr: Mapping[str, Any]) -> dict[str, Any]:
        sha = self._branch_sha(p["full_path"], mr["source_branch"])
        return {
            "id": mr["iid"] + 5000,
            "iid": mr["iid"],
            "project_id": p["id"],
            "title": mr["title"],
            "description": mr["description"],
            "state": mr["state"],
            "draft": mr["title"].startswith(("Draft:", "[Draft]", "(Draft)")),
            "labels": list(mr["labels"]),
            "assignees": [self._basic_user(i) for i in mr.get("assignee_ids", [])],
            "reviewers": [self._basic_user(i) for i in mr.get("reviewer_ids", [])],
            "source_branch": mr["source_branch"],
            "target_branch": mr["target_branch"],
            "source_project_id": p["id"],
            "target_project_id": p["id"],
            "sha": sha,
            "web_url": f"{self.base_url}/{p['full_path']}/-/merge_requests/{mr['iid']}",
        }

    def _mr_route(
        self, method: str, p: dict[str, Any], rest: list[str], query: dict[str, list[str]], body: Any
    ) -> Reply:
        mrs: list[dict[str, Any]] = p.setdefault("merge_requests", [])
        mr = next((m for m in mrs if rest and str(m["iid"]) == rest[0]), None)
        match (method, rest):
            case ("GET", []):
                state = (query.get("state") or ["all"])[0]
                branch = (query.get("source_branch") or [""])[0]
                found = [
                    self._mr_json(p, m)
                    for m in sorted(mrs, key=lambda m: -m["iid"])
                    if (state == "all" or m["state"] == state)
                    and (not branch or m["source_branch"] == branch)
                ]
                return Reply(200, found)
            case ("POST", []):
                if not isinstance(body, dict) or not body.get("source_branch") or not body.get("title"):
                    return Reply(400, {"message": "400 Bad request - title is missing"})
                dup = next(
                    (
                        m
                        for m in mrs
                        if m["source_branch"] == body["source_branch"] and m["state"] == "opened"
                    ),
                    None,
                )
                if dup is not None:
                    msg = f"Another open merge request already exists for this source branch: !{dup['iid']}"
                    return Reply(409, {"message": [msg]})
                labels = body.get("labels") or ""
                record = {
                    "iid": len(mrs) + 1,
                    "title": body["title"],
                    "description": body.get("description") or "",
                    "state": "opened",
                    "labels": [x for x in (labels.split(",") if isinstance(labels, str) else labels) if x],
                    "source_branch": body["source_branch"],
                    "target_branch": body.get("target_branch") or p["default_branch"],
                    "notes": [],
                }
                mrs.append(record)
                return Reply(201, self._mr_json(p, record))
            case ("GET", [_]) if mr is not None:
                return Reply(200, self._mr_json(p, mr))
            case ("PUT", [_]) if mr is not None and isinstance(body, dict):
                for key in ("title", "description"):
                    if key in body:
                        mr[key] = body[key]
                for key, add in (("add_labels", True), ("remove_labels", False)):
                    for label in [x for x in str(body.get(key) or "").split(",") if x]:
                        if add and label not in mr["labels"]:
                            mr["labels"].append(label)
                        elif not add and label in mr["labels"]:
                            mr["labels"].remove(label)
                for key in ("assignee_ids", "reviewer_ids"):
                    if key in body:  # unknown users and non-members are dropped without an error
                        ids = [int(i) for i in body[key] or [] if int(i) in self.users]
                        mr[key] = [i for i in ids if self.users[i]["member"]]
                if body.get("state_event") == "close":
                    mr["state"] = "closed"
                return Reply(200, self._mr_json(p, mr))
            case ("POST", [_, "notes"]) if mr is not None and isinstance(body, dict):
                mr["notes"].append(body.get("body"))
                return Reply(201, {"id": len(mr["notes"]), "body": body.get("body")})
        return Reply(404, {"message": "404 Not Found"})

    def merge_request(self, full_path: str, iid: int, *, state: str | None = None) -> dict[str, Any]:
        """A merge request's record; `state`: set it (merged, as the web UI's button would)."""
        with self._lock:
            mr = next(
                m for m in self.projects[full_path.lower()].get("merge_requests", []) if m["iid"] == iid
            )
            if state is not None:
                mr["state"] = state
            return mr

    def _create(self, body: Any) -> Reply:
        if not isinstance(body, dict) or not (body.get("name") or body.get("path")):
            return Reply(400, {"message": "400 Bad request - name is missing, path is missing"})
        ns_id = body.get("namespace_id")
        ns = self.namespaces.get(int(ns_id)) if ns_id is not None else self.namespaces[1]
        if ns is None:
            return Reply(404, {"message": "404 Namespace Not Found"})
        path = body.get("path") or body["name"]
        if not _NAME_RE.match(path) or path.endswith((".git", ".atom")):
            msg = "can contain only letters, digits, '_', '-' and '.'. Cannot start with '-', end in '.git' or end in '.atom'"
            return Reply(400, {"message": {"path": [msg]}})
        # docs.gitlab.com user/reserved_names: a slug starts and ends with a letter or digit and has
        # no consecutive special characters (gitlab-org/gitlab!80055).
        if not _GL_SLUG_RE.fullmatch(path):
            msg = "must not start or end with a special character and must not contain consecutive special characters."
            return Reply(400, {"message": {"path": [msg]}})
        visibility = body.get("visibility", "private")
        if visibility not in ("private", "internal", "public"):
            return Reply(400, {"error": "visibility does not have a valid value"})
        # docs.gitlab.com user/public_access: internal is disabled for new projects on gitlab.com ...
        if self.gitlab_com and visibility == "internal":
            msg = "internal has been restricted by your GitLab administrator"
            return Reply(400, {"message": {"visibility_level": [msg]}})
        # ... and a project cannot be more visible than its group (Project#visibility_level_allowed_by_group).
        if ns["kind"] == "group" and _GL_RANK[visibility] > _GL_RANK[ns["visibility"]]:
            msg = f"{visibility} is not allowed in a {ns['visibility']} group."
            return Reply(400, {"message": {"visibility_level": [msg]}})
        if f"{ns['full_path']}/{path}".lower() in self.projects:
            return Reply(400, _GL_TAKEN)
        record = self._new_project(ns, body)
        self.created.append(record["full_path"])
        return Reply(201, self._project_json(record))
