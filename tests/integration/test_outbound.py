"""The outbound policy through the operator on the real API server: tenants cannot make it call
internal addresses. One operator with a strict policy serves two namespaces of its own; the test
listeners are on loopback, which that policy refuses except by the name `allowed.test`, and only
for namespaces labelled `outbound-test=allowed`. Names come from a hosts file the test controls
(PROJECTGEN_HOSTS_FILE): `allowed.test` and `refused.test` both resolve to 127.0.0.1. The operator's
environment names a recording proxy in every proxy variable (all but the API server's 127.0.0.1, as
a cluster install would): nothing the policy checks may go through it.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from kubernetes import client
from support import (
    EXPORTS,
    PROJECTS,
    OperatorProcess,
    create,
    events,
    get,
    inline_source,
    project_body,
    wait_event,
    wait_phase,
)

from projectgen_dev.fakehosts import FakeGitHub
from projectgen_dev.gitserver import GitHTTPServer
from projectgen_dev.proxy import RecordingProxy

POLICY = """\
templates: [{urlPrefix: "http://"}]
forges: [{urlPrefix: "http://"}]
internal:
  - host: allowed.test
    namespaceSelector: {matchLabels: {outbound-test: allowed}}
"""
MAX_BYTES = 3 << 20
TOKEN = "ghp_OutboundS3cret0123456789abcdef"
GIT_ENV = {
    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@t",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@t",
}
REDIRECT_ANSWER = "REDIRECT-ANSWER-" + secrets.token_hex(6)
INTERNAL_ANSWER = "INTERNAL-ANSWER-" + secrets.token_hex(6)


@dataclass
class Env:
    api: client.ApiClient
    allowed: str
    other: str
    git: GitHTTPServer
    operator: OperatorProcess
    proxied: list[str]
    """What reached the proxy named in the operator's environment."""

    def template(self, name: str, files: dict[str, bytes]) -> str:
        """Publish a copier template; returns its path on the git server (no host)."""
        work = self.git.root.parent / f"work-{name}"
        work.mkdir()
        for path, content in {"copier.yml": b"{}\n", **files}.items():
            (work / path).write_bytes(content)
        for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "t"]):
            subprocess.run(["git", *args], cwd=work, env={**GIT_ENV, "HOME": str(work)}, check=True)
        bare = self.git.repo_path(f"templates/{name}")
        subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], env=GIT_ENV, check=True)
        return f"/templates/{name}.git"

    def url(self, host: str, path: str) -> str:
        return f"http://{host}:{self.git.base_url.rsplit(':', 1)[1]}{path}"

    def requested(self, path: str) -> list[str]:
        return [r for r in self.git.requests if path in r]


def _namespace(api: client.ApiClient, suffix: str, labels: dict[str, str]) -> str:
    name = f"solo-outbound-{suffix}-{secrets.token_hex(3)}"
    client.CoreV1Api(api).create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels))
    )
    return name


@pytest.fixture(scope="module")
def env(
    api_client: client.ApiClient, control_plane: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("outbound")
    (root / "policy.yaml").write_text(POLICY)
    (root / "hosts").write_text("127.0.0.1 allowed.test refused.test\n")
    allowed = _namespace(api_client, "allowed", {"outbound-test": "allowed"})
    other = _namespace(api_client, "other", {"outbound-test": "other"})
    proxy = RecordingProxy()
    proxies = {name: proxy.url for name in ("http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY")}
    proxies |= {"no_proxy": "127.0.0.1,localhost", "NO_PROXY": "127.0.0.1,localhost"}
    operator = OperatorProcess(
        control_plane.kubeconfig,
        root / "data",
        root / "operator.log",
        namespaces=(allowed, other),
        env={
            "PROJECTGEN_POLICY_FILE": str(root / "policy.yaml"),
            "PROJECTGEN_HOSTS_FILE": str(root / "hosts"),
            "PROJECTGEN_TEMPLATE_MAX_BYTES": str(MAX_BYTES),
            "TMPDIR": str(root),
            **proxies,
        },
    )
    with proxy, GitHTTPServer(root / "git") as git, operator:
        yield Env(api_client, allowed, other, git, operator, proxy.seen)
    print(f"operator log: {root / 'operator.log'}")


def failed(env: Env, namespace: str, name: str, plural: str = PROJECTS) -> str:
    obj = wait_phase(env.api, plural, namespace, name, "Failed", "Completed", timeout=90)
    assert obj["status"]["phase"] == "Failed", obj["status"]
    message: str = obj["status"]["errorMessage"]
    wait_event(env.api, namespace, name, lambda e: e.type == "Warning" and message[:80] in (e.message or ""))
    return message


def seen_by_tenant(env: Env, namespace: str, name: str, plural: str = PROJECTS) -> str:
    """Everything a tenant can read about the object: its status and its Events."""
    texts = [json.dumps(get(env.api, plural, namespace, name))]
    texts += [f"{e.reason} {e.message}" for e in events(env.api, namespace, name)]
    return "\n".join(texts)


def template_project(name: str, url: str) -> dict[str, Any]:
    return project_body(name, [{"template": {"url": url}}])


def test_a_template_on_a_refused_address_is_refused_and_never_requested(env: Env) -> None:
    path = env.template("direct", {"a.txt": b"a"})
    create(env.api, PROJECTS, env.allowed, template_project("direct", env.url("127.0.0.1", path)))
    message = failed(env, env.allowed, "direct")
    assert "rule internal" in message and "127.0.0.1, a loopback address" in message
    assert "an admin can add one" in message
    assert env.requested(path) == []


def test_allowed_once_listed_for_the_namespace_and_refused_in_another(env: Env) -> None:
    path = env.template("listed", {"hello.txt": b"hello\n"})
    create(env.api, PROJECTS, env.allowed, template_project("listed", env.url("allowed.test", path)))
    done = wait_phase(env.api, PROJECTS, env.allowed, "listed", "Completed", "Failed", timeout=90)
    assert done["status"]["phase"] == "Completed", done["status"]
    assert [f["path"] for f in done["status"]["files"]] == ["hello.txt"]
    # allowed.test is known only to the policy's resolver: git connected to the pinned address.
    assert env.requested(path)

    other_path = env.template("listed-other", {"hello.txt": b"hello\n"})
    create(env.api, PROJECTS, env.other, template_project("listed", env.url("allowed.test", other_path)))
    message = failed(env, env.other, "listed")
    assert "rule internal" in message and f"namespace {env.other}" in message
    assert env.requested(other_path) == []


def test_a_name_resolving_to_a_refused_address_is_refused(env: Env) -> None:
    path = env.template("named", {"a.txt": b"a"})
    create(env.api, PROJECTS, env.allowed, template_project("named", env.url("refused.test", path)))
    message = failed(env, env.allowed, "named")
    assert "refused.test resolves to 127.0.0.1, a loopback address" in message
    assert env.requested(path) == []
    assert env.proxied == []


def test_the_proxy_in_the_operators_environment_is_not_used(env: Env) -> None:
    """Through the proxy, the proxy would resolve allowed.test again (DNS rebinding)."""
    path = env.template("unproxied", {"hello.txt": b"hello\n"})
    create(env.api, PROJECTS, env.allowed, template_project("unproxied", env.url("allowed.test", path)))
    done = wait_phase(env.api, PROJECTS, env.allowed, "unproxied", "Completed", "Failed", timeout=90)
    assert done["status"]["phase"] == "Completed", done["status"]
    assert env.requested(path)
    assert env.proxied == []


class _Listener(BaseHTTPRequestHandler):
    seen: list[str]
    location: str = ""
    answer: str = ""

    def do_GET(self) -> None:
        self.seen.append(self.path)
        body = self.answer.encode()
        self.send_response(302 if self.location else 200)
        if self.location:
            self.send_header("Location", self.location + self.path)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def listener() -> Iterator[Any]:
    servers: list[ThreadingHTTPServer] = []

    def start(**attrs: str) -> tuple[int, list[str]]:
        seen: list[str] = []
        server = ThreadingHTTPServer(("127.0.0.1", 0), type("L", (_Listener,), {"seen": seen, **attrs}))
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return int(server.server_address[1]), seen

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_a_redirect_to_a_refused_address_is_refused_and_no_answer_reaches_the_tenant(
    env: Env, listener: Any
) -> None:
    inner_port, inner_seen = listener(answer=INTERNAL_ANSWER)
    outer_port, outer_seen = listener(location=f"http://127.0.0.1:{inner_port}", answer=REDIRECT_ANSWER)
    url = f"http://allowed.test:{outer_port}/templates/moved.git"
    create(env.api, PROJECTS, env.allowed, template_project("moved", url))
    message = failed(env, env.allowed, "moved")
    assert "redirect" in message
    assert outer_seen, "the allowed host was asked"
    assert inner_seen == [], "the redirect target must never be requested"
    seen = seen_by_tenant(env, env.allowed, "moved")
    assert REDIRECT_ANSWER not in seen and INTERNAL_ANSWER not in seen


def test_a_forge_api_url_on_a_refused_address_is_refused_before_any_request(env: Env) -> None:
    with FakeGitHub(tokens={TOKEN}, user="octocat") as github:
        client.CoreV1Api(env.api).create_namespaced_secret(
            env.allowed,
            client.V1Secret(metadata=client.V1ObjectMeta(name="gh"), string_data={"token": TOKEN}),
        )
        create(env.api, PROJECTS, env.allowed, project_body("billing", [inline_source({"a.txt": "a"})]))
        wait_phase(env.api, PROJECTS, env.allowed, "billing", "Completed", timeout=60)
        body = {
            "kind": "RepositoryExport",
            "metadata": {"name": "to-github"},
            "spec": {
                "generatedProjectRef": {"name": "billing"},
                "exportType": "github",
                "repositoryName": "billing",
                "config": {"apiUrl": github.api_url, "credentialsSecretRef": {"name": "gh"}},
            },
        }
        create(env.api, EXPORTS, env.allowed, body)
        message = failed(env, env.allowed, "to-github", EXPORTS)
        assert "rule internal" in message and "loopback" in message
        assert github.requests == [] and github.git.requests == []
        assert TOKEN not in seen_by_tenant(env, env.allowed, "to-github", EXPORTS)


def test_an_oversized_template_repository_fails_within_its_cap(env: Env) -> None:
    path = env.template("huge", {"blob.bin": os.urandom(2 * MAX_BYTES)})
    create(env.api, PROJECTS, env.allowed, template_project("huge", env.url("allowed.test", path)))
    message = failed(env, env.allowed, "huge")
    assert f"more than {MAX_BYTES} bytes (PROJECTGEN_TEMPLATE_MAX_BYTES)" in message
    staging = env.operator.data_dir / ".staging"
    assert not staging.exists() or not any(staging.iterdir())
