"""A real Gitea on loopback with SQLite, for the publish tests: the forge that can run here.

The binary is looked up with :func:`find_gitea`: ``$PROJECTGEN_GITEA_BIN`` (a path), then
``gitea`` on ``PATH``, then ``${XDG_CACHE_HOME:-~/.cache}/projectgen/bin/gitea/<version>/``,
built there by ``hack/build-gitea.sh`` from the Go module proxy when missing (a file lock
serialises concurrent builders; many minutes the first time).

Each :class:`GiteaServer` has its own temp dir (app.ini, SQLite database, repositories, logs),
a free loopback port, an admin created with ``gitea admin user create --access-token``, and
users, organisations and tokens made through Gitea's own REST API::

    with GiteaServer() as gitea:
        alice = gitea.create_user("alice")
        gitea.create_org("acme", owner=alice)
        status, body = gitea.api("GET", "/repos/acme/demo", token=alice.token)
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import requests

from projectgen_dev import buildcache

GITEA_VERSION = "v1.26.0"
BIN_ENV = "PROJECTGEN_GITEA_BIN"
_LOOPBACK = "127.0.0.1"


class GiteaError(RuntimeError):
    """Gitea could not be found, built, started or used."""


def _log(message: str) -> None:
    print(f"[gitea] {message}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    return buildcache.cache_dir("gitea", GITEA_VERSION)


def build_script() -> Path | None:
    return buildcache.build_script("build-gitea.sh")


def find_gitea() -> Path:
    """The gitea binary: the override, then PATH, then the cache (built into when missing)."""
    return buildcache.find_or_build(
        override_env=BIN_ENV,
        target=cache_dir(),
        binary="gitea",
        stamp=f"gitea {GITEA_VERSION}\n",
        script="build-gitea.sh",
        version=GITEA_VERSION,
        what=f"Gitea {GITEA_VERSION} into {cache_dir()}",
        error=GiteaError,
        log=_log,
        on_path=True,
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class GiteaUser:
    name: str
    password: str = field(repr=False)
    token: str = field(repr=False)
    """An access token with scope `all`."""


_APP_INI = """\
APP_NAME = projectgen-test
RUN_MODE = prod
RUN_USER = {user}
WORK_PATH = {work}
I_AM_BEING_UNSAFE_RUNNING_AS_ROOT = true

[server]
PROTOCOL = http
HTTP_ADDR = {host}
HTTP_PORT = {port}
ROOT_URL = http://{host}:{port}/
DISABLE_SSH = true
START_SSH_SERVER = false
OFFLINE_MODE = true
LFS_START_SERVER = false
APP_DATA_PATH = {work}/data
{static}

[database]
DB_TYPE = sqlite3
PATH = {work}/data/gitea.db
SQLITE_JOURNAL_MODE = WAL

[repository]
ROOT = {work}/repositories
DEFAULT_BRANCH = main
DEFAULT_PRIVATE = private

[security]
INSTALL_LOCK = true
SECRET_KEY = {secret}
INTERNAL_TOKEN = {internal}
PASSWORD_HASH_ALGO = pbkdf2_hi

[oauth2]
JWT_SECRET = {jwt}

[service]
DISABLE_REGISTRATION = true
REQUIRE_SIGNIN_VIEW = false
DEFAULT_KEEP_EMAIL_PRIVATE = true

[mailer]
ENABLED = false

[session]
PROVIDER = memory

[cache]
ADAPTER = memory

[queue]
TYPE = channel

[indexer]
ISSUE_INDEXER_TYPE = db
REPO_INDEXER_ENABLED = false

[cron]
ENABLED = false

[cron.update_checker]
ENABLED = false

[actions]
ENABLED = false

[packages]
ENABLED = false

[log]
MODE = file
LEVEL = Info
ROOT_PATH = {work}/log
"""


class GiteaServer:
    """One Gitea process, its data in a temp dir removed by :meth:`stop`."""

    def __init__(self, binary: Path | None = None, *, admin: str = "gitea-admin") -> None:
        self.binary = binary
        self.admin_name = admin
        self.work: Path | None = None
        self.port = 0
        self.admin: GiteaUser | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    # lifecycle ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{_LOOPBACK}:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/v1"

    @property
    def config(self) -> Path:
        assert self.work is not None
        return self.work / "app.ini"

    @property
    def log_path(self) -> Path:
        assert self.work is not None
        return self.work / "gitea.out"

    def start(self, timeout: float = 120.0) -> Self:
        self.binary = self.binary or find_gitea()
        self.work = Path(tempfile.mkdtemp(prefix="projectgen-gitea-"))
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout: float) -> None:
        assert self.work is not None and self.binary is not None
        self.port = _free_port()
        static = self.binary.parent / "static"
        self.config.write_text(
            _APP_INI.format(
                user=_current_user(),
                work=self.work,
                host=_LOOPBACK,
                port=self.port,
                static=f"STATIC_ROOT_PATH = {static}" if static.is_dir() else "",
                secret=secrets.token_hex(32),
                internal=secrets.token_urlsafe(64),
                jwt=base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("="),
            )
        )
        self.config.chmod(0o600)
        self._cli("migrate")
        password = secrets.token_urlsafe(18)
        out = self._cli(
            "admin",
            "user",
            "create",
            "--username",
            self.admin_name,
            "--password",
            password,
            "--email",
            f"{self.admin_name}@example.com",
            "--admin",
            "--must-change-password=false",
            "--access-token",
            "--access-token-name",
            "projectgen-admin",
            "--access-token-scopes",
            "all",
        )
        match = re.search(r"\b([0-9a-f]{40})\b", out)
        if match is None:
            raise GiteaError(f"`gitea admin user create` printed no access token: {out[-500:]}")
        self.admin = GiteaUser(self.admin_name, password, match.group(1))
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [str(self.binary), "web", "--config", str(self.config), "--work-path", str(self.work)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=self._env(),
            )
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise GiteaError(f"gitea web exited with {self._proc.returncode}:\n{self._tail()}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/api/healthz", timeout=2).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise GiteaError(f"gitea did not become healthy in {timeout:.0f}s:\n{self._tail()}")
            time.sleep(0.2)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.work is not None:
            shutil.rmtree(self.work, ignore_errors=True)
            self.work = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _env(self) -> dict[str, str]:
        assert self.work is not None
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.work),
            "USER": _current_user(),
            "GITEA_WORK_DIR": str(self.work),
            "GIT_CONFIG_NOSYSTEM": "1",
        }

    def _cli(self, *args: str) -> str:
        assert self.binary is not None
        proc = subprocess.run(
            [str(self.binary), *args, "--config", str(self.config), "--work-path", str(self.work)],
            env=self._env(),
            capture_output=True,
            timeout=120,
            check=False,
        )
        out = (proc.stdout + proc.stderr).decode(errors="replace")
        if proc.returncode != 0:
            raise GiteaError(f"gitea {' '.join(args[:3])} failed ({proc.returncode}): {out[-2000:]}")
        return out

    def _tail(self) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-40:])
        except OSError:
            return "(no log)"

    # the API -----------------------------------------------------------------------------
    def api(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        basic: tuple[str, str] | None = None,
        body: Any = None,
    ) -> tuple[int, Any]:
        """One REST call; (status, parsed JSON or text). Never raises on an HTTP error status."""
        headers = {"Accept": "application/json"}
        if token is not None:
            headers["Authorization"] = f"token {token}"
        resp = requests.request(
            method, self.api_url + path, headers=headers, auth=basic, json=body, timeout=30
        )
        try:
            return resp.status_code, resp.json() if resp.content else None
        except ValueError:
            return resp.status_code, resp.text

    def _ok(self, expected: int, method: str, path: str, **kw: Any) -> Any:
        status, body = self.api(method, path, **kw)
        if status != expected:
            raise GiteaError(f"{method} {path}: expected {expected}, got {status}: {body!r:.500}")
        return body

    def create_user(self, name: str, *, token_scopes: tuple[str, ...] = ("all",)) -> GiteaUser:
        """A user made by the admin, with a password and an access token of its own."""
        assert self.admin is not None
        password = secrets.token_urlsafe(18)
        self._ok(
            201,
            "POST",
            "/admin/users",
            token=self.admin.token,
            body={
                "username": name,
                "email": f"{name}@example.com",
                "password": password,
                "must_change_password": False,
            },
        )
        return GiteaUser(name, password, self.create_token(name, password, scopes=token_scopes))

    def create_token(self, user: str, password: str, *, scopes: tuple[str, ...] = ("all",)) -> str:
        """POST /users/{user}/tokens, which Gitea only accepts with basic auth."""
        body = self._ok(
            201,
            "POST",
            f"/users/{user}/tokens",
            basic=(user, password),
            body={"name": f"t-{secrets.token_hex(4)}", "scopes": list(scopes)},
        )
        return str(body["sha1"])

    def create_org(self, name: str, *, owner: GiteaUser, visibility: str = "public") -> dict[str, Any]:
        body: dict[str, Any] = self._ok(
            201, "POST", "/orgs", token=owner.token, body={"username": name, "visibility": visibility}
        )
        return body

    def create_repo(self, owner: str, name: str, *, token: str, private: bool = True) -> dict[str, Any]:
        """A repository someone else made (empty: no auto-init)."""
        status, me = self.api("GET", "/user", token=token)
        path = "/user/repos" if status == 200 and me["login"] == owner else f"/orgs/{owner}/repos"
        body: dict[str, Any] = self._ok(
            201, "POST", path, token=token, body={"name": name, "private": private}
        )
        return body


def _current_user() -> str:
    """Gitea refuses to start when RUN_USER is not the user it runs as."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return os.environ.get("USER", "root")


def main(argv: list[str] | None = None) -> int:
    """`python -m projectgen_dev.gitea --ensure`: find or build the binary, print where."""
    parser = argparse.ArgumentParser(prog="python -m projectgen_dev.gitea", description=main.__doc__)
    parser.add_argument("--ensure", action="store_true", required=True, help="find or build the binary")
    parser.parse_args(argv)
    try:
        _log(f"binary: {find_gitea()}")
    except GiteaError as exc:
        _log(str(exc))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
