"""Push a rendered tree to a git smart-HTTP remote as one commit, with the git CLI.

Why the git CLI and not dulwich: git is the reference client of the protocol GitHub and
GitLab serve (protocol v2, shallow fetch, proxies, TLS settings, `http.extraHeader`), the
image needs it anyway, and `git fast-import` builds the commit in one process while Python
streams each file once, checking its size and SHA-256 against the manifest on the way.
dulwich is not a dependency and would be a second, pure-Python implementation of the
same protocol on the hot path.

The commit holds exactly the manifest's files (`deleteall`, then one `M` per file); `gitupdate`
makes it the branch's first commit or merges it with what the branch holds. A manifest symlink goes in as git stores one
(mode 120000, its target as the blob), after `readlink` (never followed) shows the recorded
target and the links resolve inside the manifest (`generation/links.py`). A tree equal to the head's is not pushed.

The token never reaches disk or argv (argv is world-readable in /proc): git gets it from
`GIT_CONFIG_COUNT` environment config as an `Authorization: Basic` header scoped to the
remote's origin, with no credential helper, no prompts, `HOME` in the temp dir (the
user's and the system's config are not read) and a timeout on every command.

With an outbound policy (always in the operator) git connects to the checked address and never
through a proxy (`projectgen.outbound.git`); the proxy variables reach git only without one.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from projectgen import outbound
from projectgen.export.publish.model import PublishError
from projectgen.export.publish.redaction import redact, secret_forms
from projectgen.generation.links import LinkError, Tree
from projectgen.generation.manifest import ProjectFile

LOCAL_REF = "refs/heads/projectgen-export"
_CHUNK = 1 << 20
_PASS_ENV = (
    "PATH",
    "TZ",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "GIT_SSL_CAINFO",
    "GIT_SSL_CAPATH",
)
_AUTH_MARKERS = (
    "returned error: 401",
    "returned error: 403",
    "authentication failed",
    "could not read username",
    "could not read password",
    "invalid username or password",
    "http basic: access denied",
    "permission to ",
    "you are not allowed to push",
    "permission denied for writing",  # Gitea's pre-receive answer to a token that may only read
)
_DECLINED_MARKERS = ("protected branch", "pre-receive hook declined", "gh006", "gh013")
_MOVED_MARKERS = ("non-fast-forward", "fetch first", "[rejected]", "stale info", "cannot lock ref")
_TEMPORARY_MARKERS = (
    "returned error: 5",
    "returned error: 429",
    "returned error: 404",
    "not found",
    "could not resolve host",
    "failed to connect",
    "connection refused",
    "connection reset",
    "connection timed out",
    "operation timed out",
    "rpc failed",
    "early eof",
    "remote end hung up",
    "empty reply",
    "recv failure",
    "send failure",
    "transfer closed",
    "ssl",
    "gnutls",
    "unable to access",
)


@dataclass(frozen=True)
class Credentials:
    username: str
    token: str = field(repr=False)

    def header(self) -> str:
        raw = f"{self.username}:{self.token}".encode()
        return "Authorization: Basic " + base64.b64encode(raw).decode()


class GitSession:
    """git commands in one private directory, with the credentials in the environment only."""

    def __init__(
        self,
        url: str,
        credentials: Credentials,
        *,
        workdir: Path,
        timeout: float,
        guard: outbound.Guard | None = None,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise PublishError(f"the clone URL {url!r} is not an http(s) URL", permanent=True)
        self.url = url
        self.timeout = timeout
        self.secrets = secret_forms(credentials.token)
        self.home = Path(tempfile.mkdtemp(prefix="git-", dir=workdir))
        self.git_dir = self.home / "repo.git"
        origin = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/"
        config = [
            (f"http.{origin}.extraHeader", credentials.header()),
            ("credential.helper", ""),
            ("core.askPass", ""),
            ("http.lowSpeedLimit", "1000"),
            ("http.lowSpeedTime", "60"),
            ("gc.auto", "0"),
            ("init.defaultBranch", "main"),
        ]
        if guard is not None:  # checks the push remote (raises outbound.Refused) and pins it
            config += outbound.git_config(guard, "forge", url)
        env = {name: os.environ[name] for name in _PASS_ENV if name in os.environ}
        if guard is not None:  # the policy connects to the checked address itself, never via a proxy
            env = outbound.without_proxies(env)
        env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
        env.update(
            {
                "HOME": str(self.home),
                "XDG_CONFIG_HOME": str(self.home / ".config"),
                "GIT_CONFIG_NOSYSTEM": "1",
                "GIT_CONFIG_GLOBAL": os.devnull,
                "GIT_CEILING_DIRECTORIES": str(self.home.parent),
                "GIT_DIR": str(self.git_dir),
                "GIT_TERMINAL_PROMPT": "0",
                "GIT_ASKPASS": "",
                "SSH_ASKPASS": "",
                "GIT_ALLOW_PROTOCOL": "http:https",
                "LC_ALL": "C",
                "GIT_CONFIG_COUNT": str(len(config)),
            }
        )
        for i, (key, value) in enumerate(config):
            env[f"GIT_CONFIG_KEY_{i}"] = key
            env[f"GIT_CONFIG_VALUE_{i}"] = value
        self.env = env

    def run(self, *args: str, what: str) -> str:
        try:
            proc = subprocess.run(
                ["git", *args],
                env=self.env,
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=self.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise PublishError(f"git {what} timed out after {self.timeout:.0f}s", permanent=False) from None
        except OSError as exc:
            raise PublishError(f"could not run git: {exc.strerror}", permanent=True) from None
        if proc.returncode != 0:
            raise self.failure(what, proc.stderr.decode("utf-8", "replace"))
        return proc.stdout.decode("utf-8", "replace")

    def failure(self, what: str, stderr: str) -> PublishError:
        text = redact(stderr, self.secrets).strip()
        tail = _tail(text)
        low = text.lower()
        if any(m in low for m in _AUTH_MARKERS):
            return PublishError(
                "the token was refused by the git server (HTTP 401/403): check it has write access to the repository",
                permanent=True,
            )
        if any(m in low for m in _DECLINED_MARKERS):
            return PublishError(f"the git server declined the {what}: {tail}", permanent=True)
        if any(m in low for m in _MOVED_MARKERS):
            return PublishError(f"the branch moved during the {what}; retrying: {tail}", permanent=False)
        if any(m in low for m in _TEMPORARY_MARKERS):
            return PublishError(f"git {what} failed: {tail}", permanent=False)
        return PublishError(f"git {what} failed: {tail}", permanent=True)

    def heads(self) -> dict[str, str]:
        """Branch name -> commit of the remote."""
        out = self.run("ls-remote", "--heads", self.url, what="ls-remote")
        heads: dict[str, str] = {}
        for line in out.splitlines():
            sha, _, ref = line.partition("\t")
            if ref.startswith("refs/heads/"):
                heads[ref.removeprefix("refs/heads/")] = sha
        return heads


def _tail(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return "; ".join(lines[-3:])[-500:] or "no output"


def list_heads(
    url: str,
    credentials: Credentials,
    *,
    workdir: Path,
    timeout: float,
    guard: outbound.Guard | None = None,
) -> dict[str, str]:
    """Branch name -> commit of the remote; empty for a repository without commits."""
    return GitSession(url, credentials, workdir=workdir, timeout=timeout, guard=guard).heads()


def git_ident(name: str, email: str) -> str:
    def clean(text: str) -> str:
        return "".join(c for c in text if c not in "<>\n\r\0").strip()

    return f"{clean(name) or 'projectgen'} <{clean(email)}> {int(time.time())} +0000"


def commit_header(message: str, author_name: str, author_email: str, parent: str | None) -> bytes:
    ident = git_ident(author_name, author_email).encode()
    msg = message.encode()
    if not msg.endswith(b"\n"):
        msg += b"\n"
    header = b"commit %s\nauthor %s\ncommitter %s\ndata %d\n%s" % (
        LOCAL_REF.encode(),
        ident,
        ident,
        len(msg),
        msg,
    )
    if parent:
        header += b"from %s\n" % parent.encode()
    return header + b"deleteall\n"


def _check_path(path: str) -> None:
    parts = path.split("/")
    if (
        not path
        or "\0" in path
        or any(part in ("", ".", "..") for part in parts)
        or any(part.casefold() == ".git" for part in parts)
    ):
        raise PublishError(f"path {path!r} in the manifest is not a safe relative path", permanent=True)


def _quote(path: str) -> bytes:
    raw = path.encode("utf-8", "surrogateescape")
    if b"\n" in raw or raw.startswith(b'"'):
        raw = b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"').replace(b"\n", b"\\n") + b'"'
    return raw


def _mismatch(path: str, what: str) -> PublishError:
    return PublishError(
        f"file {path!r} does not match the manifest ({what}); regenerate the project", permanent=True
    )


def _stream_blob(out: IO[bytes], root: str, f: ProjectFile, mark: int) -> None:
    full = os.path.join(root, f.path)
    try:
        fd = os.open(full, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise _mismatch(f.path, "missing from the tree") from None
    except OSError:
        raise _mismatch(f.path, "not a readable regular file") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise _mismatch(f.path, "not a regular file")
        if os.path.commonpath([root, os.path.realpath(full)]) != root:
            raise _mismatch(f.path, "outside the tree")
        if st.st_size != f.size:
            raise _mismatch(f.path, "size differs")
        out.write(b"blob\nmark :%d\ndata %d\n" % (mark, f.size))
        digest = hashlib.sha256()
        remaining = f.size
        while remaining:
            chunk = fh.read(min(_CHUNK, remaining))
            if not chunk:
                raise _mismatch(f.path, "size differs")
            digest.update(chunk)
            out.write(chunk)
            remaining -= len(chunk)
        if fh.read(1):
            raise _mismatch(f.path, "size differs")
    if digest.hexdigest() != f.sha256:
        raise _mismatch(f.path, "sha256 differs")
    out.write(b"\n")


def _link_blob(out: IO[bytes], root: str, f: ProjectFile, mark: int) -> None:
    """A symlink's blob (its target, as git stores one), after checking that on disk it is a link
    to the recorded target, below a parent that is a real directory of the tree."""
    full = os.path.join(root, f.path)
    parent = os.path.dirname(full)
    if os.path.realpath(parent) != os.path.normpath(parent):
        raise _mismatch(f.path, "a parent directory is a symlink or outside the tree")
    try:
        target = os.readlink(full)
    except FileNotFoundError:
        raise _mismatch(f.path, "symlink missing from the tree") from None
    except OSError:
        raise _mismatch(f.path, "a symlink in the manifest, not one on disk") from None
    if target != f.target:
        raise _mismatch(f.path, f"symlink points to {target!r}, {f.target!r} recorded")
    raw = target.encode("utf-8")
    if len(raw) != f.size or hashlib.sha256(raw).hexdigest() != f.sha256:
        raise _mismatch(f.path, "size or sha256 of the link target differs")
    out.write(b"blob\nmark :%d\ndata %d\n%s\n" % (mark, len(raw), raw))


def _check_links(files: Sequence[ProjectFile]) -> None:
    if not any(f.target is not None for f in files):
        return
    try:
        Tree.of((f.path, f.target) for f in files).check()
    except LinkError as exc:
        raise PublishError(f"{exc}; regenerate the project", permanent=True) from None


def fast_import(git: GitSession, tree: Path, files: Sequence[ProjectFile], header: bytes) -> None:
    ordered = sorted(files, key=lambda f: f.path)
    seen: set[str] = set()
    for f in ordered:
        _check_path(f.path)
        if f.path in seen:
            raise PublishError(f"path {f.path!r} is listed twice in the manifest", permanent=True)
        seen.add(f.path)
    _check_links(ordered)
    root = os.path.realpath(tree)
    with tempfile.TemporaryFile(dir=git.home) as err:
        proc = subprocess.Popen(
            ["git", "fast-import", "--quiet", "--done", "--date-format=raw"],
            env=git.env,
            cwd=git.home,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        assert proc.stdin is not None
        deadline = time.monotonic() + git.timeout
        try:
            try:
                for mark, f in enumerate(ordered, start=1):
                    if f.target is not None:
                        _link_blob(proc.stdin, root, f, mark)
                    else:
                        _stream_blob(proc.stdin, root, f, mark)
                    if time.monotonic() > deadline:
                        raise PublishError(
                            f"git fast-import timed out after {git.timeout:.0f}s", permanent=False
                        )
                proc.stdin.write(header)
                for mark, f in enumerate(ordered, start=1):
                    mode = b"120000" if f.target is not None else b"100755" if f.executable else b"100644"
                    proc.stdin.write(b"M %s :%d %s\n" % (mode, mark, _quote(f.path)))
                proc.stdin.write(b"\ndone\n")
                proc.stdin.close()
            except BrokenPipeError:
                pass  # git stopped reading: its exit status and stderr say why
            code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise PublishError(
                f"git fast-import timed out after {git.timeout:.0f}s", permanent=False
            ) from None
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if code != 0:
            err.seek(0)
            text = redact(err.read().decode("utf-8", "replace"), git.secrets)
            raise PublishError(f"git fast-import failed: {_tail(text)}", permanent=True)
