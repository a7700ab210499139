"""The outbound policy module on its own, and through the publishers against the forge stand-ins.

Every address here is loopback or a value that is never connected to (link-local, unique-local,
198.18.0.0/15); "allowed" cases use loopback listed in the policy, as the integration tests do.
"""

from __future__ import annotations

import ipaddress
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from conftest import HostEnv, Project
from projectgen import outbound
from projectgen.api.v1alpha1.generatedproject import GeneratedProjectSpec
from projectgen.cli import main as cli_main
from projectgen.generation.errors import GenerationError
from projectgen.generation.render import render_project
from projectgen.outbound.addresses import internal_reason
from projectgen_dev.gitserver import GitHTTPServer
from projectgen_dev.proxy import RecordingProxy

LOOPBACK = "internal: [{cidr: 127.0.0.0/8}]\n"
HTTP_ALL = "templates: [{urlPrefix: 'http://'}]\nforges: [{urlPrefix: 'http://'}]\n"


def guard(policy: str = "", namespace: str = "team-a", **kw: object) -> outbound.Guard:
    return outbound.Guard(outbound.parse_policy(policy, "test policy"), namespace, **kw)  # type: ignore[arg-type]


# --- addresses ----------------------------------------------------------------------------------


def _public_ipv4() -> ipaddress.IPv4Address:
    """An address Python calls global (never connected to), without a public literal in the tree."""
    return next(a for a in (ipaddress.IPv4Address(n << 24 | 1) for n in range(1, 224)) if a.is_global)


def _teredo(server: str, client: str) -> str:
    """2001:0:<server>:<flags>:<port>:<client>, the client's address stored inverted (RFC 4380)."""
    s, c = int(ipaddress.IPv4Address(server)), int(ipaddress.IPv4Address(client)) ^ 0xFFFFFFFF
    return str(ipaddress.IPv6Address(0x20010000 << 96 | s << 64 | c))


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.1.2.3", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("fd12:3456::1", "unique-local IPv6"),
        ("198.18.0.1", "private"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        # Each IPv6 form that carries an IPv4 address, carrying an internal one: Python 3.11.7's
        # ipaddress calls most of them global. Refused, naming the IPv4 address and the form.
        ("64:ff9b::a9fe:a9fe", "link-local (IPv4 169.254.169.254 inside, as NAT64)"),
        ("64:ff9b::7f00:1", "loopback (IPv4 127.0.0.1 inside, as NAT64)"),
        ("2002:7f00:1::", "loopback (IPv4 127.0.0.1 inside, as 6to4)"),
        ("2002:a9fe:a9fe::1", "link-local (IPv4 169.254.169.254 inside, as 6to4)"),
        ("::ffff:0:7f00:1", "loopback (IPv4 127.0.0.1 inside, as SIIT)"),
        ("::ffff:0:a9fe:a9fe", "link-local (IPv4 169.254.169.254 inside, as SIIT)"),
        ("::7f00:1", "loopback (IPv4 127.0.0.1 inside, as IPv4-compatible)"),
        ("::a9fe:a9fe", "link-local (IPv4 169.254.169.254 inside, as IPv4-compatible)"),
        ("::c612:1", "private (IPv4 198.18.0.1 inside, as IPv4-compatible)"),
        ("::ffff:169.254.169.254", "link-local"),
        (_teredo("198.18.0.1", str(_public_ipv4())), "private (IPv4 198.18.0.1 inside, as Teredo server)"),
        (_teredo(str(_public_ipv4()), "127.0.0.1"), "loopback (IPv4 127.0.0.1 inside, as Teredo client)"),
        ("3ffe::5efe:a9fe:a9fe", "link-local (IPv4 169.254.169.254 inside, as ISATAP)"),
        ("3ffe::200:5efe:7f00:1", "loopback (IPv4 127.0.0.1 inside, as ISATAP)"),
        ("64:ff9b:1::a9fe:a9fe", "local-use NAT64 (64:ff9b:1::/48)"),
        ("64:ff9b:1:ffff::1", "local-use NAT64 (64:ff9b:1::/48)"),
        ("2002::1", "unspecified (IPv4 0.0.0.0 inside, as 6to4)"),
        # Not IPv4 carriers, but ranges Python 3.11.7 calls global too.
        ("fec0::1", "site-local IPv6 (fec0::/10)"),
        ("5f00::1", "SRv6 segment identifiers (5f00::/16)"),
    ],
)
def test_internal_addresses_are_named(address: str, reason: str) -> None:
    assert internal_reason(ipaddress.ip_address(address)) == reason


def test_a_name_resolving_to_nat64_of_the_metadata_address_is_refused(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("64:ff9b::a9fe:a9fe forge.test\n")
    with pytest.raises(outbound.Refused, match=r"IPv4 169\.254\.169\.254 inside, as NAT64"):
        guard(resolver=outbound.Resolver(hosts)).check("forge", "https://forge.test/api/v4")


def test_ipv6_forms_carrying_a_public_ipv4_address() -> None:
    """NAT64 of a public host passes (DNS64 clusters reach forges that way); 6to4, deprecated and
    relayed by whoever is nearest, is refused whatever it carries, as newer Pythons do."""
    public = int(_public_ipv4())
    assert internal_reason(ipaddress.IPv6Address(int(ipaddress.IPv6Address("64:ff9b::")) | public)) is None
    assert internal_reason(ipaddress.IPv6Address(0x3FFE << 112 | 0x5EFE << 32 | public)) is None
    assert internal_reason(ipaddress.IPv6Address(0x2002 << 112 | public << 80)) == "6to4 (2002::/16)"


@pytest.mark.parametrize(
    ("address", "carried"), [("198.18.3.4", ""), ("64:ff9b::c612:304", " (IPv4 198.18.3.4 inside, as NAT64)")]
)
def test_cluster_ranges_are_internal_and_named_first(address: str, carried: str) -> None:
    networks = outbound.parse_networks(["198.18.0.0/16"], "test")
    assert internal_reason(ipaddress.ip_address(address), networks) == (
        f"in the cluster's service/pod range 198.18.0.0/16{carried}"
    )


def test_hosts_file_resolver(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("# test names\n127.0.0.2 tpl.test Other.Test\n::1 tpl.test\n")
    resolver = outbound.Resolver(hosts)
    assert [str(a) for a in resolver.resolve("TPL.test.", 80)] == ["127.0.0.2", "::1"]
    assert [str(a) for a in resolver.resolve("other.test", 80)] == ["127.0.0.2"]
    assert [str(a) for a in resolver.resolve("127.0.0.9", 80)] == ["127.0.0.9"]


# --- the policy ---------------------------------------------------------------------------------


def test_default_refuses_loopback_link_local_and_plain_http() -> None:
    g = guard()
    with pytest.raises(outbound.Refused) as info:
        g.check("template", "https://127.0.0.1/t.git")
    assert info.value.rule == "internal"
    assert "127.0.0.1, a loopback address" in str(info.value)
    assert "an admin can add one" in str(info.value) and "projectgen-policy" in str(info.value)
    with pytest.raises(outbound.Refused) as info:
        g.check("forge", "https://[fe80::1]/api/v4")
    assert "link-local" in str(info.value)
    with pytest.raises(outbound.Refused) as info:
        g.check("template", "http://127.0.0.1/t.git")
    assert info.value.rule == "templates" and "allowed here: https://" in str(info.value)
    with pytest.raises(outbound.Refused) as info:
        g.check("template", "ssh://git@127.0.0.1/t.git")
    assert info.value.rule == "schemes"


def test_every_resolved_address_must_pass(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 mixed.test\n::1 mixed.test\n")
    g = guard("internal: [{cidr: 127.0.0.0/8}]\n", resolver=outbound.Resolver(hosts))
    with pytest.raises(outbound.Refused) as info:
        g.check("template", "https://mixed.test/t.git")
    assert "mixed.test resolves to ::1" in str(info.value)


def test_internal_entries_by_host_and_cidr_scoped_by_namespace_labels(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 git.test\n")
    policy = (
        "internal:\n"
        "  - host: git.test\n"
        "    namespaceSelector: {matchLabels: {team: platform}}\n"
        "  - cidr: 127.0.0.0/8\n"
        "    namespaceSelector: {matchExpressions: [{key: tier, operator: In, values: [dev]}]}\n"
    )
    resolver = outbound.Resolver(hosts)
    platform = guard(policy, labels={"team": "platform"}, resolver=resolver)
    assert [str(a) for a in platform.check("forge", "https://git.test/api/v4").addresses] == ["127.0.0.1"]
    with pytest.raises(outbound.Refused):
        platform.check("forge", "https://127.0.0.1/api/v4")  # by name only
    dev = guard(policy, labels={"tier": "dev"}, resolver=resolver)
    dev.check("forge", "https://127.0.0.1/api/v4")
    other = guard(policy, "team-b", labels={"team": "web"}, resolver=resolver)
    with pytest.raises(outbound.Refused) as info:
        other.check("forge", "https://git.test/api/v4")
    assert "namespace team-b" in str(info.value)
    assert outbound.parse_policy(policy, "p").uses_namespace_labels()
    assert not outbound.parse_policy(LOOPBACK, "p").uses_namespace_labels()


@pytest.mark.parametrize(
    ("prefix", "url", "matches"),
    [
        ("https://git.test", "https://git.test/a.git", True),
        ("https://git.test", "https://git.test.evil/a.git", False),
        ("https://git.test/team/", "https://git.test/team/a.git", True),
        ("https://git.test/team/", "https://git.test/other/a.git", False),
        ("https://git.test/", "https://user:pw@git.test/a.git", True),
        ("https://git.test/", "https://git.test@127.0.0.1/a.git", False),
        ("https://GIT.test/", "https://git.TEST:443/a.git", True),
        ("http://127.0.0.1:", "http://127.0.0.1:8080/a.git", True),
        ("http://127.0.0.1:", "http://127.0.0.10:8080/a.git", False),
    ],
)
def test_url_prefixes_end_at_a_boundary(prefix: str, url: str, matches: bool) -> None:
    g = guard(f"templates: [{{urlPrefix: '{prefix}'}}]\n{LOOPBACK}", resolver=outbound.Resolver())
    if matches:
        try:
            g.check_prefix("template", outbound.policy._normalised(outbound.policy.urlsplit(url)), url)
        except outbound.Refused as exc:
            pytest.fail(str(exc))
    else:
        with pytest.raises(outbound.Refused):
            g.check_prefix("template", outbound.policy._normalised(outbound.policy.urlsplit(url)), url)


def test_invalid_policies_are_refused_with_a_reason() -> None:
    for text, problem in (
        ("templates: [{urlPrefix: 'ftp://x'}]", "urlPrefix must start with"),
        ("internal: [{host: a, cidr: 127.0.0.0/8}]", "exactly one of host and cidr"),
        ("internal: [{cidr: nonsense}]", "not an IP network"),
        ("clusterNetworks: [nonsense]", "not an IP network"),
        ("templates: {", "not valid YAML"),
        ("- a list", "must be a mapping"),
        ("tempaltes: []", "Extra inputs"),
    ):
        with pytest.raises(outbound.PolicyError, match=problem):
            outbound.parse_policy(text, "p")


def test_policy_source_default_reload_and_fail_closed(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    source = outbound.PolicySource(path)
    with pytest.raises(outbound.Refused):
        source.guard("ns", dict).check("template", "https://127.0.0.1/t.git")  # no file: the default
    path.write_text(LOOPBACK)
    source.guard("ns", dict).check("template", "https://127.0.0.1/t.git")
    path.write_text("templates: {")
    with pytest.raises(outbound.Refused) as info:
        source.guard("ns", dict).check("template", "https://127.0.0.1/t.git")
    assert "unusable" in str(info.value) and "not valid YAML" in str(info.value)


def test_labels_are_read_only_when_a_selector_needs_them(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(LOOPBACK)
    calls: list[int] = []

    def labels() -> dict[str, str]:
        calls.append(1)
        return {}

    outbound.PolicySource(path).guard("ns", labels)
    assert calls == []
    path.write_text("internal: [{cidr: 127.0.0.0/8, namespaceSelector: {matchLabels: {a: b}}}]\n")
    outbound.PolicySource(path).guard("ns", labels)
    assert calls == [1]


# --- git ----------------------------------------------------------------------------------------


def test_git_config_pins_refuses_redirects_and_other_origin_submodules(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 git.test\n::1 git.test\n")
    g = guard(HTTP_ALL + LOOPBACK.replace("]", ", {cidr: '::1/128'}]"), resolver=outbound.Resolver(hosts))
    config = outbound.git_config(g, "template", "http://u:p@git.test:8080/t.git", submodules=True)
    assert ("http.curloptResolve", "git.test:8080:127.0.0.1,[::1]") in config
    assert ("http.followRedirects", "false") in config
    assert ("http.proxy", "") in config  # an empty proxy: curl ignores the proxy variables
    assert ("url.projectgen-refused://.insteadOf", "https://") in config
    assert ("url.projectgen-refused://.insteadOf", "http://") in config
    assert ("url.http://git.test:8080/.insteadOf", "http://git.test:8080/") in config
    env = outbound.config_env(config)
    assert env["GIT_CONFIG_COUNT"] == str(len(config))


# --- HTTP ---------------------------------------------------------------------------------------


class _Recorder(BaseHTTPRequestHandler):
    seen: list[str]
    location: str | None = None
    body: bytes = b'{"ok": true}'

    def do_GET(self) -> None:
        self.seen.append(self.path)
        if self.location:
            self.send_response(302)
            self.send_header("Location", self.location)
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def listener() -> Iterator[tuple[str, list[str], type[_Recorder]]]:
    handler = type("Handler", (_Recorder,), {"seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler.seen, handler
    finally:
        server.shutdown()
        server.server_close()


PROXY_VARIABLES = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The operator's environment names a recording proxy, in every spelling, with no exceptions."""
    with RecordingProxy() as recorder:
        for name in (*PROXY_VARIABLES, "Https_Proxy"):
            monkeypatch.setenv(name, recorder.url)
        monkeypatch.setenv("GIT_CONFIG_PARAMETERS", f"'http.proxy'='{recorder.url}'")
        for name in ("no_proxy", "NO_PROXY"):
            monkeypatch.delenv(name, raising=False)
        yield recorder.seen


def test_without_proxies_drops_every_spelling() -> None:
    env = {name: "x" for name in (*PROXY_VARIABLES, "No_Proxy", "no_proxy", "PATH")}
    assert outbound.without_proxies(env) == {"PATH": "x"}


def test_session_refuses_before_connecting(listener: tuple[str, list[str], type[_Recorder]]) -> None:
    url, seen, _ = listener
    s = outbound.session(guard(HTTP_ALL))
    with pytest.raises(outbound.Refused, match="loopback"):
        s.get(url + "/api/v4/user", timeout=5)
    assert seen == []


def test_session_connects_to_the_checked_address(
    tmp_path: Path, listener: tuple[str, list[str], type[_Recorder]]
) -> None:
    url, seen, _ = listener
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 forge.test\n")
    s = outbound.session(guard(HTTP_ALL + LOOPBACK, resolver=outbound.Resolver(hosts)))
    port = url.rsplit(":", 1)[1]
    # forge.test exists only in the policy's hosts file: the connection used the checked address.
    assert s.get(f"http://forge.test:{port}/x", timeout=5).json() == {"ok": True}
    assert seen == ["/x"]


def test_session_goes_to_the_checked_address_not_the_proxy(
    tmp_path: Path, listener: tuple[str, list[str], type[_Recorder]], proxy: list[str]
) -> None:
    url, seen, _ = listener
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 forge.test\n")
    s = outbound.session(guard(HTTP_ALL + LOOPBACK, resolver=outbound.Resolver(hosts)))
    assert s.get(f"http://forge.test:{url.rsplit(':', 1)[1]}/x", timeout=5).json() == {"ok": True}
    assert seen == ["/x"] and proxy == []


def test_redirect_to_a_refused_address_is_refused(
    tmp_path: Path, listener: tuple[str, list[str], type[_Recorder]]
) -> None:
    url, seen, handler = listener
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 forge.test\n127.0.0.2 inner.test\n")
    port = url.rsplit(":", 1)[1]
    handler.location = f"http://inner.test:{port}/secret"
    g = guard(HTTP_ALL + "internal: [{host: forge.test}]\n", resolver=outbound.Resolver(hosts))
    with pytest.raises(outbound.Refused, match=r"inner\.test resolves to 127\.0\.0\.2"):
        outbound.session(g).get(f"http://forge.test:{port}/start", timeout=5)
    assert seen == ["/start"]


def test_answers_are_capped(listener: tuple[str, list[str], type[_Recorder]]) -> None:
    url, _, handler = listener
    handler.body = b"x" * 5000
    g = guard(HTTP_ALL + LOOPBACK, limits=outbound.Limits(answer_max_bytes=4096))
    with pytest.raises(outbound.AnswerTooLarge, match="larger than 4096 bytes"):
        outbound.session(g).get(url + "/big", timeout=5)
    handler.body = b"x" * 4096
    assert len(outbound.session(g).get(url + "/ok", timeout=5).content) == 4096


def test_no_guard_is_a_plain_session() -> None:
    s = outbound.session(None)
    assert isinstance(s.get_adapter("https://x/"), requests.adapters.HTTPAdapter)
    assert not isinstance(s.get_adapter("https://x/"), outbound.CheckedAdapter)


# --- the size cap -------------------------------------------------------------------------------


def test_watch_size_stops_a_growing_fetch(tmp_path: Path) -> None:
    root = tmp_path / "fetch"
    root.mkdir()
    writer = (
        "import os, sys, time\n"
        "with open(sys.argv[1], 'wb') as f:\n"
        "    for _ in range(2000):\n"
        "        f.write(b'x' * 65536); f.flush(); time.sleep(0.005)\n"
    )
    with (
        pytest.raises(outbound.CapExceeded, match="more than 1048576 bytes"),
        outbound.watch_size(root, 1 << 20, 1000, "the template repository") as watch,
    ):
        proc = subprocess.run(
            [sys.executable, "-c", writer, str(root / "big")],
            env={**watch.env, "PATH": "/usr/bin:/bin"},
            check=False,
            timeout=60,
        )
    assert proc.returncode == -9  # killed long before it wrote 128 MiB
    assert (root / "big").stat().st_size < 64 << 20


def test_watch_size_counts_files(tmp_path: Path) -> None:
    with (
        pytest.raises(outbound.CapExceeded, match="more than 10 files"),
        outbound.watch_size(tmp_path, 1 << 30, 10, "the template repository"),
    ):
        for i in range(20):
            (tmp_path / str(i)).write_text("x")


# --- the publishers -----------------------------------------------------------------------------


def test_forge_on_a_refused_address_is_refused_before_any_request(env: HostEnv, project: Project) -> None:
    req = env.request(project, guard=guard(HTTP_ALL))
    err = env.fail(req)
    assert err.permanent
    assert "rule internal" in err.message and "loopback" in err.message
    assert env.fake.requests == [] and env.fake.git.requests == []
    assert env.claims == []


def test_forge_allowed_by_the_policy_publishes_through_it(
    env: HostEnv, project: Project, tmp_path: Path
) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 forge.test\n")
    g = guard(
        HTTP_ALL + "internal: [{host: forge.test}, {cidr: 127.0.0.0/8}]\n", resolver=outbound.Resolver(hosts)
    )
    result = env.run(env.request(project, guard=g))
    assert result.created and result.pushed
    assert env.fake.git.requests  # the push went through the pinned remote


def test_publishing_goes_to_the_checked_addresses_not_the_proxy(
    env: HostEnv, project: Project, proxy: list[str]
) -> None:
    """The API calls (PyGithub, python-gitlab) and the push (git ls-remote, fetch, push) alike."""
    result = env.run(env.request(project, guard=guard(HTTP_ALL + LOOPBACK)))
    assert result.created and result.pushed
    assert env.fake.requests and env.fake.git.requests
    assert proxy == []


def test_a_push_remote_the_policy_refuses_is_not_contacted(env: HostEnv, project: Project) -> None:
    """The API is allowed, but the clone URL it answers (the stand-in's git server) is not."""
    g = guard(f"forges: [{{urlPrefix: '{env.fake.api_url}'}}]\n{LOOPBACK}")
    err = env.fail(env.request(project, guard=g))
    assert err.permanent and "rule forges" in err.message
    assert env.fake.requests  # the API was called
    assert env.fake.git.requests == []  # the push remote never was


# --- projectgen render --policy -----------------------------------------------------------------


def test_render_applies_a_policy_only_when_given_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with GitHTTPServer(tmp_path / "srv") as server:
        work = tmp_path / "work"
        work.mkdir()
        (work / "copier.yml").write_text("{}\n")
        (work / "hello.txt").write_text("hello\n")
        git_env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "GIT_CONFIG_NOSYSTEM": "1"}
        for args in (
            ["init", "-q", "-b", "main"],
            ["add", "-A"],
            ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "t"],
        ):
            subprocess.run(["git", *args], cwd=work, env=git_env, check=True)
        bare = server.repo_path("templates/t")
        bare.parent.mkdir(parents=True)
        subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], env=git_env, check=True)
        spec = tmp_path / "gp.yaml"
        spec.write_text(
            "apiVersion: projectgen.io/v1alpha1\nkind: GeneratedProject\n"
            "metadata: {name: t, namespace: team-a}\n"
            f"spec: {{projectRef: {{name: t}}, sources: [{{template: {{url: '{server.url('templates/t')}'}}}}]}}\n"
        )
        strict, loose = tmp_path / "strict.yaml", tmp_path / "loose.yaml"
        strict.write_text("{}\n")
        loose.write_text(
            HTTP_ALL + "internal: [{cidr: 127.0.0.0/8, namespaceSelector: {matchLabels: {a: b}}}]\n"
        )

        assert cli_main(["render", "-f", str(spec), "-o", str(tmp_path / "o1"), "--policy", str(strict)]) == 1
        assert "refused by rule templates" in capsys.readouterr().err
        assert server.requests == []
        assert cli_main(["render", "-f", str(spec), "-o", str(tmp_path / "o2"), "--policy", str(loose)]) == 1
        assert "namespace team-a" in capsys.readouterr().err  # the selector does not match its labels
        assert server.requests == []
        argv = [
            "-f",
            str(spec),
            "-o",
            str(tmp_path / "o3"),
            "--policy",
            str(loose),
            "--namespace-label",
            "a=b",
        ]
        assert cli_main(["render", *argv]) == 0
        assert (tmp_path / "o3" / "hello.txt").read_text() == "hello\n"
        assert (
            cli_main(["render", "-f", str(spec), "-o", str(tmp_path / "o4")]) == 0
        )  # no policy: offline use


def _repo(
    server: GitHTTPServer, scratch: Path, name: str, files: dict[str, str], sub: str | None = None
) -> str:
    work = scratch / f"work-{name}-{server.base_url.rsplit(':', 1)[1]}"
    work.mkdir()
    for path, text in files.items():
        (work / path).write_text(text)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(scratch), "GIT_CONFIG_NOSYSTEM": "1"}
    subprocess.run([*git, "init", "-q", "-b", "main"], cwd=work, env=env, check=True)
    if sub is not None:
        subprocess.run(
            [*git, "submodule", "add", "-q", sub, "sub"], cwd=work, env=env, check=True, capture_output=True
        )
    subprocess.run([*git, "add", "-A"], cwd=work, env=env, check=True)
    subprocess.run([*git, "commit", "-qm", "t"], cwd=work, env=env, check=True)
    bare = server.repo_path(f"t/{name}")
    bare.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], env=env, check=True)
    return server.url(f"t/{name}")


def _template_spec(url: str) -> GeneratedProjectSpec:
    return GeneratedProjectSpec.model_validate(
        {"projectRef": {"name": "t"}, "sources": [{"template": {"url": url}}]}
    )


def test_template_clone_goes_to_the_checked_address_not_the_proxy(tmp_path: Path, proxy: list[str]) -> None:
    """Through a proxy, the proxy would resolve the name again (DNS rebinding); with a policy the
    clone goes to the checked address, and a name resolving to an internal address is refused."""
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 templates.test\n127.0.0.2 rebound.test\n")
    g = guard(HTTP_ALL + "internal: [{host: templates.test}]\n", resolver=outbound.Resolver(hosts))

    def render(url: str, policy: outbound.Guard | None) -> list[str]:
        work = Path(tempfile.mkdtemp(dir=tmp_path))
        spec = GeneratedProjectSpec.model_validate(
            {"projectRef": {"name": "t"}, "sources": [{"template": {"url": url}}]}
        )
        result = render_project(spec, work / "tree", configmaps=lambda _: None, workdir=work, guard=policy)
        return [f.path for f in result.manifest.files]

    with GitHTTPServer(tmp_path / "srv") as server:
        url = _repo(server, tmp_path, "t", {"copier.yml": "{}\n", "hello.txt": "hello\n"})
        assert render(url.replace("127.0.0.1", "templates.test"), g) == ["hello.txt"]
        assert server.requests and proxy == []

        before = len(server.requests)
        with pytest.raises(GenerationError, match=r"rebound\.test resolves to 127\.0\.0\.2"):
            render(url.replace("127.0.0.1", "rebound.test"), g)
        assert len(server.requests) == before and proxy == []

        # No policy (`projectgen render` without --policy): the caller's own network, proxy included.
        with pytest.raises(GenerationError, match="502"):
            render(url, None)
        assert proxy and proxy[0].startswith("GET http://127.0.0.1:")


def test_submodules_only_from_the_templates_own_origin(tmp_path: Path) -> None:
    """Both servers are allowed by the policy; a submodule on the other one is still not fetched."""
    with GitHTTPServer(tmp_path / "a") as a, GitHTTPServer(tmp_path / "b") as b:
        same = _repo(a, tmp_path, "same", {"copier.yml": "{}\n"}, sub=_repo(a, tmp_path, "s", {"s.txt": "s"}))
        other = _repo(
            a, tmp_path, "other", {"copier.yml": "{}\n"}, sub=_repo(b, tmp_path, "s", {"s.txt": "s"})
        )
        g = guard(HTTP_ALL + LOOPBACK)
        for url, name in ((same, "same"), (other, "other")):
            spec = GeneratedProjectSpec.model_validate(
                {"projectRef": {"name": name}, "sources": [{"template": {"url": url}}]}
            )
            work = tmp_path / f"render-{name}"
            work.mkdir()
            before = len(b.requests)
            if name == "same":
                result = render_project(spec, work / "tree", configmaps=lambda _: None, workdir=work, guard=g)
                assert "sub/s.txt" in [f.path for f in result.manifest.files]
            else:
                with pytest.raises(GenerationError, match="submodule on another origin"):
                    render_project(spec, work / "tree", configmaps=lambda _: None, workdir=work, guard=g)
                assert len(b.requests) == before, "the other origin was contacted"
