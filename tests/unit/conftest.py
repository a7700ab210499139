"""Fixtures for the publisher tests: a rendered tree, the fake hosts, and a token-hygiene guard."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import subprocess
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from projectgen.export.publish import PublishError, PublishRequest, PublishResult, PublishSettings, publish
from projectgen.generation.manifest import Manifest, ProjectFile
from projectgen_dev.ci import unavailable
from projectgen_dev.fakehosts import FakeGitHub, FakeGitLab
from projectgen_dev.gitea import GiteaError, GiteaServer, find_gitea

TOKEN = "tok_S3cretValue-0123456789abcdef"
SECRETS = (
    TOKEN,
    base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode(),
    base64.b64encode(f"oauth2:{TOKEN}".encode()).decode(),
)
FAST = PublishSettings(
    attempts=3,
    backoff_base=0.05,
    backoff_cap=2.0,
    deadline=20.0,
    http_timeout=5.0,
    git_timeout=30.0,
    github_request_spacing=False,
)


# --- the rendered tree -----------------------------------------------------------------------
@dataclass
class Project:
    tree: Path
    manifest: Manifest = field(default_factory=Manifest)

    def write(self, path: str, data: bytes, *, executable: bool = False) -> None:
        target = self.tree / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        target.chmod(0o755 if executable else 0o644)
        self.rebuild()

    def remove(self, path: str) -> None:
        (self.tree / path).unlink()
        self.rebuild()

    def expected(self) -> dict[str, tuple[str, bool]]:
        """path -> (sha256, executable), as the manifest says."""
        return {f.path: (f.sha256, f.executable) for f in self.manifest.files}

    def rebuild(self) -> Manifest:
        files = []
        for p in sorted(self.tree.rglob("*")):
            if p.is_file():
                data = p.read_bytes()
                rel = p.relative_to(self.tree).as_posix()
                files.append(
                    ProjectFile(
                        path=rel,
                        name=p.name,
                        type="text",
                        size=len(data),
                        sha256=hashlib.sha256(data).hexdigest(),
                        executable=os.access(p, os.X_OK),
                    )
                )
        self.manifest = Manifest.build(files)
        return self.manifest


@pytest.fixture
def project(tmp_path: Path) -> Project:
    proj = Project(tmp_path / "tree")
    proj.tree.mkdir()
    proj.write("README.md", b"# demo\n")
    proj.write("src/demo/__init__.py", b"VERSION = '1.0'\n")
    proj.write("bin/run", b"#!/bin/sh\necho run\n", executable=True)
    proj.write("docs/with space.md", b"spaces in names\n")
    proj.write("docs/\u00fcn\u00efcode.md", "unicode \u2713\n".encode())
    proj.write("assets/blob.bin", bytes(range(256)) * 4)
    proj.write(".github/workflows/ci.yml", b"on: push\n")
    return proj


def _git_env(home: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "LC_ALL": "C",
    }


def git(bare: Path, *args: str) -> str:
    env = {**_git_env(bare), "GIT_DIR": str(bare)}
    return subprocess.run(["git", *args], env=env, capture_output=True, check=True).stdout.decode()


def pushed_tree(
    bare: Path | str, branch: str, scratch: Path, env: dict[str, str] | None = None
) -> dict[str, tuple[str, bool]]:
    """Clone with the real git and read back paths, SHA-256 and executable bits (checkout and index).

    `bare`: a path or a URL; `env`: extra environment (credentials as GIT_CONFIG_* stay out of argv)."""
    dest = scratch / f"clone-{uuid.uuid4().hex[:8]}"
    env = {**_git_env(scratch), **(env or {})}
    subprocess.run(["git", "clone", "-q", "--branch", branch, str(bare), str(dest)], env=env, check=True)
    modes = {}
    out = subprocess.run(
        ["git", "-C", str(dest), "ls-tree", "-r", "-z", "HEAD"], env=env, capture_output=True, check=True
    )
    for entry in out.stdout.decode().split("\0"):
        if entry:
            meta, _, path = entry.partition("\t")
            modes[path] = meta.split()[0]
    found: dict[str, tuple[str, bool]] = {}
    for p in dest.rglob("*"):
        rel = p.relative_to(dest).as_posix()
        if rel == ".git" or rel.startswith(".git/") or not p.is_file():
            continue
        executable = os.access(p, os.X_OK)
        assert modes[rel] == ("100755" if executable else "100644"), rel
        found[rel] = (hashlib.sha256(p.read_bytes()).hexdigest(), executable)
    assert set(found) == set(modes)
    return found


# --- token hygiene -----------------------------------------------------------------------------
class Guard:
    """Collects every place the token could leak to, and asserts it never does."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self.caplog = caplog
        self.argv: list[str] = []
        self.texts: list[str] = []
        self.workdirs = 0
        self.leaks: list[str] = []
        self.secrets: list[str] = list(SECRETS)
        """What must never appear; tests against a real forge add the tokens it issued."""

    def on_workdir(self, path: Path) -> None:
        self.workdirs += 1
        for p in path.rglob("*"):
            if p.is_file() and not p.is_symlink():
                data = p.read_bytes()
                self.leaks.extend(f"{p}: {s[:6]}..." for s in self.secrets if s.encode() in data)

    def exception(self, exc: BaseException) -> None:
        self.texts.extend([str(exc), repr(exc), "".join(traceback.format_exception(exc))])

    def check(self) -> None:
        texts = [*self.texts, *self.argv]
        # At teardown `caplog.records` holds the teardown's records only: the test's are the "call" phase's.
        phases = [*self.caplog.get_records("setup"), *self.caplog.get_records("call"), *self.caplog.records]
        for record in phases:
            texts.append(record.getMessage())
            if record.exc_info:
                texts.append("".join(traceback.format_exception(*record.exc_info)))
        leaks = list(self.leaks)
        leaks.extend(t[:200] for t in texts if any(s in t for s in self.secrets))
        assert not leaks, f"the token leaked: {leaks}"


@pytest.fixture
def guard(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> Iterator[Guard]:
    caplog.set_level(logging.DEBUG)  # every logger: ours, urllib3, github, gitlab
    g = Guard(caplog)
    real_init = subprocess.Popen.__init__

    def recording_init(self: subprocess.Popen[Any], args: Any, *a: Any, **kw: Any) -> None:
        g.argv.append(args if isinstance(args, str) else " ".join(map(str, args)))
        real_init(self, args, *a, **kw)

    monkeypatch.setattr(subprocess.Popen, "__init__", recording_init)
    yield g
    g.check()


# --- the hosts ---------------------------------------------------------------------------------
@dataclass
class HostEnv:
    """One fake host and how its requests look, so flow tests run against both."""

    host: str
    fake: FakeGitHub | FakeGitLab
    user: str
    org: str
    create: str
    """fnmatch pattern of the create request."""
    lookup: str
    guard: Guard
    scratch: Path
    claims: list[str] = field(default_factory=list)
    token: str = TOKEN
    secrets: tuple[str, ...] = SECRETS
    settings: PublishSettings = FAST

    def request(self, project: Project, **overrides: Any) -> PublishRequest:
        base = PublishRequest(
            host=self.host,  # type: ignore[arg-type]
            api_url=self.fake.api_url,
            token=TOKEN,
            name="demo",
            tree=project.tree,
            files=project.manifest.files,
            content_hash=project.manifest.content_hash,
            description="A generated project",
            topics=["generated", "demo"],
            commit_message="Generated by projectgen from demo",
            author_name="projectgen",
            author_email="projectgen@users.noreply.local",
        )
        return replace(base, **overrides)

    def run(self, req: PublishRequest, settings: PublishSettings | None = None) -> PublishResult:
        return publish(
            req,
            claim=self.claims.append,
            settings=settings or self.settings,
            on_workdir=self.guard.on_workdir,
        )

    def fail(self, req: PublishRequest, settings: PublishSettings | None = None) -> PublishError:
        with pytest.raises(PublishError) as info:
            self.run(req, settings)
        self.guard.exception(info.value)
        return info.value

    def bare(self, full_name: str) -> Path:
        return self.fake.git.repo_path(full_name)

    def tree(self, full_name: str, branch: str = "main") -> dict[str, tuple[str, bool]]:
        """What a real `git clone` of the pushed repository holds."""
        return pushed_tree(self.bare(full_name), branch, self.scratch)

    def git(self, full_name: str, *args: str) -> str:
        return git(self.bare(full_name), *args)

    def add_existing(self, full_name: str) -> None:
        if isinstance(self.fake, FakeGitHub):
            self.fake.add_repo(full_name)
        else:
            self.fake.add_project(full_name)


@pytest.fixture
def fake_github(tmp_path: Path) -> Iterator[FakeGitHub]:
    """github.com: `acme` is on the free plan, `bigcorp` belongs to an enterprise."""
    with FakeGitHub(tokens={TOKEN}, orgs=["acme"], root=tmp_path / "github") as fake:
        fake.add_org("bigcorp", enterprise=True)
        yield fake


@pytest.fixture
def fake_gitlab(tmp_path: Path) -> Iterator[FakeGitLab]:
    """A self-managed GitLab: public group `acme/platform`, private group `acme/secret`."""
    with FakeGitLab(tokens={TOKEN}, root=tmp_path / "gitlab") as fake:
        fake.add_group("acme/platform", visibility="public")
        fake.add_group("acme/secret", visibility="private")
        yield fake


@pytest.fixture
def github_env(guard: Guard, tmp_path: Path) -> Callable[[FakeGitHub], HostEnv]:
    """HostEnv for any FakeGitHub (e.g. an Enterprise one)."""
    return lambda fake: HostEnv("github", fake, "octocat", "acme", "/user/repos", "/repos/*", guard, tmp_path)


@pytest.fixture
def gh(fake_github: FakeGitHub, github_env: Callable[[FakeGitHub], HostEnv]) -> HostEnv:
    return github_env(fake_github)


@pytest.fixture
def gl(fake_gitlab: FakeGitLab, guard: Guard, tmp_path: Path) -> HostEnv:
    return HostEnv(
        "gitlab", fake_gitlab, "root", "acme/platform", "/projects", "/projects/*", guard, tmp_path
    )


@pytest.fixture(params=["github", "gitlab"])
def env(request: pytest.FixtureRequest) -> HostEnv:
    value: HostEnv = request.getfixturevalue("gh" if request.param == "github" else "gl")
    return value


# --- a real Gitea ------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def gitea_server() -> Iterator[GiteaServer]:
    """One real Gitea for the session (built into the cache the first time); fails under CI."""
    try:
        binary = find_gitea()
    except GiteaError as exc:
        unavailable(f"Gitea unavailable: {exc}")
    with GiteaServer(binary) as server:
        yield server
