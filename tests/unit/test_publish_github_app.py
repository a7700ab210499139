"""GitHub App credentials against FakeGitHub: JWT, installation lookup, expiring tokens, clear errors."""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from conftest import FAST
from projectgen.export.publish import GitHubApp, PublishRequest, secret_forms
from projectgen.export.publish.gitpush import Credentials, list_heads
from projectgen.export.publish.redaction import private_key_forms
from projectgen_dev.fakehosts import FakeGitHub

if TYPE_CHECKING:
    from conftest import HostEnv, Project

APP_ID = 424242


def _rsa_pem() -> tuple[str, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


@pytest.fixture(scope="session")
def app_key() -> tuple[str, bytes]:
    return _rsa_pem()


@dataclass
class AppEnv:
    gh: HostEnv
    fake: FakeGitHub
    key: str
    installation: int

    def app(self, **overrides: object) -> GitHubApp:
        base = GitHubApp(app_id=str(APP_ID), private_key=self.key, installation_id=self.installation)
        return replace(base, **overrides)  # type: ignore[arg-type]

    def request(self, project: Project, **overrides: object) -> PublishRequest:
        app = overrides.pop("github_app", self.app())
        return replace(self.gh.request(project, owner="acme"), token="", github_app=app, **overrides)  # type: ignore[arg-type]


@pytest.fixture
def app(gh: HostEnv, fake_github: FakeGitHub, app_key: tuple[str, bytes]) -> Iterator[AppEnv]:
    """The app is installed on organisation `acme`; the token scans also look for its key and every
    token and JWT it used, in PyGithub's DEBUG log too (its logger is at INFO unless asked)."""
    github_log = logging.getLogger("github")
    level = github_log.level
    github_log.setLevel(logging.DEBUG)  # setLevel: the loggers' level caches are cleared
    private, public = app_key
    fake_github.add_app(APP_ID, public)
    installation = fake_github.install_app(APP_ID, "acme")
    gh.guard.secrets.extend(private_key_forms(private))
    yield AppEnv(gh, fake_github, private, installation)
    for token in [*fake_github.issued_tokens(), *fake_github.jwts_seen]:
        gh.guard.secrets.extend(secret_forms(token))
    github_log.setLevel(level)


def _tokens_minted(fake: FakeGitHub) -> int:
    return fake.count("POST", "/app/installations/*/access_tokens")


def test_app_publishes_with_an_installation_token(app: AppEnv, project: Project) -> None:
    result = app.gh.run(app.request(project))

    assert result.repository == "acme/demo" and result.created and result.pushed
    assert app.gh.tree("acme/demo") == project.expected()
    assert app.fake.repo("acme/demo")["topics"] == ["generated", "demo"]
    assert _tokens_minted(app.fake) == 1  # one token for the API calls and the push
    assert app.fake.count("GET", "/user") == 0  # an installation has no user
    token = app.fake.issued_tokens()[0]
    assert app.fake.git_accepts(token)


def test_installation_is_found_for_the_organisation(app: AppEnv, project: Project) -> None:
    result = app.gh.run(app.request(project, github_app=app.app(installation_id=None)))

    assert result.repository == "acme/demo"
    assert app.fake.count("GET", "/orgs/acme/installation") == 1
    assert app.gh.tree("acme/demo") == project.expected()


def test_owner_defaults_to_the_installation_account(app: AppEnv, project: Project) -> None:
    result = app.gh.run(app.request(project, owner=None))
    assert result.repository == "acme/demo"
    assert app.fake.count("GET", f"/app/installations/{app.installation}") == 1


def test_installation_on_a_user_is_found_and_adopts_an_empty_repository(
    app: AppEnv, project: Project
) -> None:
    app.fake.install_app(APP_ID, "octocat")
    no_id = app.app(installation_id=None)

    # An installation token cannot create a user's repository (POST /user/repos wants a user).
    err = app.gh.fail(app.request(project, owner="octocat", github_app=no_id))
    assert err.permanent and "ifExists: Adopt" in str(err) and "octocat/demo" in str(err)
    assert app.fake.created == [] and app.gh.claims == []
    assert app.fake.count("GET", "/orgs/octocat/installation") == 1
    assert app.fake.count("GET", "/users/octocat/installation") == 1

    app.fake.add_repo("octocat/demo")
    result = app.gh.run(app.request(project, owner="octocat", github_app=no_id, if_exists="Adopt"))
    assert result.repository == "octocat/demo" and not result.created
    assert app.gh.tree("octocat/demo") == project.expected()


def test_app_not_installed_on_the_owner_is_a_clear_permanent_error(app: AppEnv, project: Project) -> None:
    app.fake.add_org("elsewhere")
    err = app.gh.fail(app.request(project, owner="elsewhere", github_app=app.app(installation_id=None)))
    assert err.permanent and "not installed" in str(err)
    assert app.fake.created == [] and app.fake.issued_tokens() == []


def test_no_installation_and_no_owner_says_what_to_set(app: AppEnv, project: Project) -> None:
    err = app.gh.fail(app.request(project, owner=None, github_app=app.app(installation_id=None)))
    assert err.permanent and "config.owner" in str(err) and "installationId" in str(err)
    assert app.fake.calls == []


def test_token_expiring_during_the_publish_is_renewed_before_the_push(app: AppEnv, project: Project) -> None:
    app.fake.token_ttl = 3.0
    # The create answers after the first token has expired: a push with it would be refused.
    app.fake.fail_next("POST", "/orgs/*/repos", status=None, delay=3.5)
    settings = replace(FAST, app_token_margin=1.0)

    result = app.gh.run(app.request(project), settings)

    assert result.pushed and app.gh.tree("acme/demo") == project.expected()
    first, *later = app.fake.issued_tokens()
    assert later, "no token was minted after the first one expired"
    assert not app.fake.git_accepts(first)  # the stand-in refuses it now, as GitHub would


def test_token_expiring_between_api_calls_is_renewed(app: AppEnv, project: Project) -> None:
    app.fake.token_ttl = 2.0
    app.fake.fail_next("GET", "/repos/*", status=None, delay=2.5)
    result = app.gh.run(app.request(project), replace(FAST, app_token_margin=0.5))
    assert result.created and result.pushed
    assert _tokens_minted(app.fake) >= 2
    # Every API request after the lookup carried a token the stand-in accepted: no 401 was answered.
    assert app.fake.count("POST", "/orgs/acme/repos") == 1


def test_stand_in_refuses_expired_installation_tokens(app: AppEnv, project: Project, tmp_path: Path) -> None:
    app.fake.token_ttl = 1.0
    app.gh.run(app.request(project))
    token = app.fake.issued_tokens()[-1]
    deadline = time.monotonic() + 10
    while app.fake.git_accepts(token) and time.monotonic() < deadline:
        time.sleep(0.1)

    answer = requests.get(
        f"{app.fake.api_url}/repos/acme/demo", headers={"Authorization": f"token {token}"}, timeout=5
    )
    assert answer.status_code == 401 and answer.json()["message"] == "Bad credentials"
    with pytest.raises(Exception, match="refused"):
        list_heads(
            app.fake.git.url("acme/demo"), Credentials("x-access-token", token), workdir=tmp_path, timeout=30
        )


def test_bad_private_key_is_a_clear_permanent_error(app: AppEnv, project: Project) -> None:
    mangled = app.key.replace("\n", "\n ", 3)[:-60] + "\n-----END RSA PRIVATE KEY-----\n"
    err = app.gh.fail(app.request(project, github_app=app.app(private_key=mangled)))
    assert err.permanent and "not an unencrypted PEM RSA private key" in str(err)
    assert app.fake.calls == []


def test_a_key_that_is_not_rsa_is_refused(app: AppEnv, project: Project) -> None:
    ec_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        .decode()
    )
    app.gh.guard.secrets.extend(private_key_forms(ec_pem))
    err = app.gh.fail(app.request(project, github_app=app.app(private_key=ec_pem)))
    assert err.permanent and "RS256" in str(err)


def test_wrong_app_id_is_a_clear_permanent_error(app: AppEnv, project: Project) -> None:
    err = app.gh.fail(app.request(project, github_app=app.app(app_id="999")))
    assert err.permanent and "'999'" in str(err) and "app's ID" in str(err)
    assert app.fake.created == [] and app.fake.issued_tokens() == []


def test_key_of_another_app_is_a_clear_permanent_error(app: AppEnv, project: Project) -> None:
    other, _ = _rsa_pem()
    app.gh.guard.secrets.extend(private_key_forms(other))
    err = app.gh.fail(app.request(project, github_app=app.app(private_key=other)))
    assert err.permanent and "private key" in str(err) and "401" in str(err)
    assert app.fake.created == []


# --- the stand-in's JWT rules (docs.github.com: generating a JWT for a GitHub App) -------------
def _jwt(key: str, **claims: object) -> str:
    now = int(time.time())
    payload: dict[str, object] = {"iat": now - 60, "exp": now + 300, "iss": str(APP_ID)} | claims
    return jwt.encode(payload, key, algorithm="RS256")


@pytest.mark.parametrize(
    ("claims", "message"),
    [  # times are offsets from the moment the test runs (collection may be minutes earlier)
        ({"exp": 900}, "too far in the future"),
        ({"exp": -10}, "'Expiration time' claim ('exp') must be a numeric value"),
        ({"iat": 600}, "'Issued at' claim ('iat')"),
        ({"iss": "1"}, "Integration not found"),
    ],
)
def test_stand_in_enforces_githubs_jwt_rules(app: AppEnv, claims: dict[str, object], message: str) -> None:
    now = int(time.time())
    claims = {k: now + v if k in ("exp", "iat") and isinstance(v, int) else v for k, v in claims.items()}
    answer = requests.post(
        f"{app.fake.api_url}/app/installations/{app.installation}/access_tokens",
        headers={"Authorization": f"Bearer {_jwt(app.key, **claims)}"},
        timeout=5,
    )
    assert answer.status_code == 401 and message in answer.json()["message"]
    assert app.fake.issued_tokens() == []


def test_stand_in_refuses_an_unsigned_jwt_and_a_jwt_outside_app_routes(app: AppEnv) -> None:
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    good = _jwt(app.key)
    claims = good.split(".")[1]
    unsigned = f"{header}.{claims}."
    url = f"{app.fake.api_url}/app/installations/{app.installation}/access_tokens"
    assert requests.post(url, headers={"Authorization": f"Bearer {unsigned}"}, timeout=5).status_code == 401
    assert requests.post(url, headers={"Authorization": f"Bearer {good}"}, timeout=5).status_code == 201
    outside = requests.get(
        f"{app.fake.api_url}/orgs/acme", headers={"Authorization": f"Bearer {good}"}, timeout=5
    )
    assert outside.status_code == 403
