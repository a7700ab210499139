"""A real git smart-HTTP server on loopback: git's own `http-backend` behind a tiny CGI bridge.

Repositories are bare directories under `root`; `<root>/<owner>/<name>.git` is served at
`http://127.0.0.1:PORT/<owner>/<name>.git`. With `tokens`, every request must carry HTTP basic
credentials whose password is one of them (the user name is free, as on GitHub and GitLab), or
that `tokens(password)` accepts.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        self.server.requests.append(f"{self.command} {self.path.split('?')[0]}")
        self.server.times.append(time.time())

    def _authorised(self) -> bool:
        tokens = self.server.tokens
        if tokens is None:
            return True
        header = self.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            _, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return tokens(password) if callable(tokens) else password in tokens

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline()

    def _serve(self) -> None:
        fault = self.server.take_fault(self.path)
        if fault is not None:
            self.close_connection = True  # the request body is left unread
            self.send_response(fault)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if not self._authorised():
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = self._read_chunked()  # git sends a push larger than http.postBuffer (1 MiB) so
        else:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
        env = {
            "GIT_PROJECT_ROOT": str(self.server.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            # http-backend reads no GIT_HTTP_RECEIVE_PACK variable: push is governed by http.receivepack.
            "GIT_CONFIG_COUNT": "2",
            "GIT_CONFIG_KEY_0": "http.receivepack",
            "GIT_CONFIG_VALUE_0": "true" if self.server.allow_push else "false",
            # partial clones (--filter), as GitHub, GitLab and Gitea serve them
            "GIT_CONFIG_KEY_1": "uploadpack.allowFilter",
            "GIT_CONFIG_VALUE_1": "true",
            "REMOTE_USER": "projectgen-test",
            "REMOTE_ADDR": self.client_address[0],
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "REQUEST_METHOD": self.command,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
            "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
            "PATH": "/usr/bin:/bin:/usr/local/bin",
        }
        proc = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, check=False)
        head, _, payload = proc.stdout.partition(b"\r\n\r\n")
        if not _:
            head, _, payload = proc.stdout.partition(b"\n\n")
        status = 200
        headers: list[tuple[str, str]] = []
        for line in head.decode("latin-1").splitlines():
            if not line.strip():
                continue
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            else:
                headers.append((name.strip(), value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        with self.server._lock:
            self.server.bytes_sent += len(payload)

    do_GET = _serve
    do_POST = _serve


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path, tokens: set[str] | Callable[[str], bool] | None, allow_push: bool) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root
        self.tokens = tokens
        self.allow_push = allow_push
        self.requests: list[str] = []
        self.times: list[float] = []
        """When each of `requests` was answered (wall clock), in the same order."""
        self.faults: list[tuple[str, int]] = []
        self.bytes_sent = 0
        self._lock = threading.Lock()

    def add_faults(self, match: str, status: int, times: int) -> None:
        with self._lock:
            self.faults.extend([(match, status)] * times)

    def take_fault(self, path: str) -> int | None:
        with self._lock:
            for i, (match, status) in enumerate(self.faults):
                if match in path:
                    del self.faults[i]
                    return status
        return None


class GitHTTPServer:
    """`with GitHTTPServer(root) as git: git.url("owner/name")`."""

    def __init__(
        self,
        root: Path,
        *,
        tokens: Iterable[str] | Callable[[str], bool] | None = None,
        allow_push: bool = True,
    ) -> None:
        """`tokens`: the passwords accepted, or a function that says whether one is (expiring tokens)."""
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        checked = tokens if tokens is None or callable(tokens) else set(tokens)
        self._server = _Server(self.root, checked, allow_push)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def requests(self) -> list[str]:
        return self._server.requests

    def requests_since(self, since: float, match: str) -> list[float]:
        """When requests whose line contains `match` were answered, from `since` on (wall clock)."""
        return [
            t
            for r, t in zip(self._server.requests, self._server.times, strict=False)
            if t >= since and match in r
        ]

    @property
    def bytes_sent(self) -> int:
        """The bytes of every response body served so far (what clients fetched)."""
        return self._server.bytes_sent

    @property
    def allow_push(self) -> bool:
        return self._server.allow_push

    @allow_push.setter
    def allow_push(self, value: bool) -> None:
        self._server.allow_push = value

    def fail_next(self, status: int = 500, *, match: str = "", times: int = 1) -> None:
        """Answer the next `times` requests whose path (with query) contains `match` with `status`."""
        self._server.add_faults(match, status, times)

    def clear_faults(self) -> None:
        with self._server._lock:
            self._server.faults.clear()

    def unserved_faults(self) -> list[str]:
        """The scripted faults no request has met yet: a retry test asserts this is empty, or it
        proves nothing about retries (a fault matched nothing and the first try succeeded)."""
        with self._server._lock:
            return [f"HTTP {status} for a path containing {match!r}" for match, status in self._server.faults]

    def url(self, full_name: str) -> str:
        return f"{self.base_url}/{full_name}.git"

    def repo_path(self, full_name: str) -> Path:
        return self.root / f"{full_name}.git"

    def create_bare(self, full_name: str, default_branch: str = "main") -> Path:
        path = self.repo_path(full_name)
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["git", "init", "--quiet", "--bare", f"--initial-branch={default_branch}", str(path)], check=True
        )
        return path

    def delete(self, full_name: str) -> None:
        shutil.rmtree(self.repo_path(full_name), ignore_errors=True)

    def start(self) -> GitHTTPServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> GitHTTPServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def tree_entries(git_dir: Path, ref: str, env: dict[str, str] | None = None) -> dict[str, str]:
    """path -> 'mode object' of every file at `ref` of the repository at `git_dir` (a bare one or a
    work tree's .git), as git stores it: tests compare repositories object for object with it."""
    out = subprocess.run(
        ["git", "ls-tree", "-r", "-z", "--full-tree", ref],
        env={**(env or {}), "GIT_DIR": str(git_dir)},
        check=True,
        capture_output=True,
    ).stdout.decode()
    found = {}
    for record in filter(None, out.split("\0")):
        meta, _, path = record.partition("\t")
        mode, _kind, oid = meta.split()
        found[path] = f"{mode} {oid}"
    return found
