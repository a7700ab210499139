"""GitHub App credentials: installation tokens minted through PyGithub, renewed before they expire.

An app authenticates as itself with a JWT signed by its private key (RS256, `iss` = app ID,
at most ten minutes long: PyGithub's `Auth.AppAuth` makes them), and exchanges it for an
installation token (`POST /app/installations/{id}/access_tokens`, one hour, PyGithub's
`GithubIntegration.get_access_token`). Without an installation ID the installation is found
for the owner (`GET /orgs/{org}/installation`, then `GET /users/{user}/installation`).

Why not `Auth.AppInstallationAuth` as it is: it renews 20 seconds before expiry, but the same
token also goes to `git push`, which may run for minutes (`git_timeout`); `AppTokens` renews
`app_token_margin` before expiry, and gives the API client and git the same current token.

Every token and JWT minted is remembered for redaction (`secrets()`); the key never leaves this
module (loaded once with `cryptography`, passed to PyJWT as a key object). PyGithub's DEBUG request
log would print the body of `access_tokens`, the token itself: a filter on its logger removes it.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from datetime import UTC, datetime
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from github import Auth, Consts, GithubException, GithubIntegration

from projectgen.export.publish.http import transport_error
from projectgen.export.publish.model import GitHubApp, PublishError, PublishSettings
from projectgen.export.publish.redaction import secret_forms

BAD_KEY = (
    "the GitHub App private key in the credentials Secret is not an unencrypted PEM RSA private key: "
    "store the .pem file GitHub generated for the app, unchanged"
)


def load_private_key(pem: str) -> RSAPrivateKey:
    """The app's key, or a permanent PublishError that quotes nothing of it."""
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError, UnicodeError):
        raise PublishError(BAD_KEY, permanent=True) from None
    if not isinstance(key, RSAPrivateKey):
        raise PublishError(BAD_KEY + " (GitHub signs app JWTs with RS256 only)", permanent=True)
    return key


class _TokenBodyFilter(logging.Filter):
    """PyGithub's request log at DEBUG holds each response body: the one of `access_tokens` is the token."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 9 and str(args[3]).endswith("/access_tokens"):
            record.args = (*args[:8], "(installation token removed)")
        return True


_REQUESTER_LOG = logging.getLogger("github.Requester")
_TOKEN_BODY_FILTER = _TokenBodyFilter()
_APP_ID_RE = re.compile(r"^(?:[0-9]{1,20}|Iv[0-9A-Za-z.]{1,64})$")


def app_from_secret(app_id: str, private_key: str, installation_id: str | None) -> GitHubApp:
    """The app as the credentials Secret gives it, checked; PublishError names the bad key, never a value."""
    if not _APP_ID_RE.fullmatch(app_id):
        raise PublishError(
            "the GitHub App ID in the credentials Secret is neither an app ID (digits) nor a client ID (Iv...)",
            permanent=True,
        )
    load_private_key(private_key)
    number: int | None = None
    if installation_id is not None:
        if not installation_id.isdigit() or not installation_id.isascii():
            raise PublishError(
                "the installation ID in the credentials Secret is not a number (the digits at the end of "
                "the installation's settings URL)",
                permanent=True,
            )
        number = int(installation_id)
    return GitHubApp(app_id=app_id, private_key=private_key, installation_id=number)


def _message(exc: GithubException) -> str:
    data = exc.data
    return str(data.get("message") or "")[:300] if isinstance(data, dict) else ""


class AppTokens:
    """The current installation token of one app installation; thread-safe, renewed on demand."""

    def __init__(self, app: GitHubApp, api_url: str, settings: PublishSettings) -> None:
        self.app_id = app.app_id
        self.api_url = api_url
        self.margin = settings.app_token_margin
        self._key = load_private_key(app.private_key)
        if _TOKEN_BODY_FILTER not in _REQUESTER_LOG.filters:
            _REQUESTER_LOG.addFilter(_TOKEN_BODY_FILTER)
        self._installation_id = app.installation_id
        self._minted: list[str] = []
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = threading.Lock()
        self._integration = GithubIntegration(
            auth=Auth.AppAuth(app.app_id, sign_func=self._sign),
            base_url=api_url,
            timeout=max(1, math.ceil(settings.http_timeout)),
            retry=None,
            seconds_between_requests=None,
            seconds_between_writes=None,
        )

    def _sign(self, payload: dict[str, Any]) -> str:
        token = jwt.encode(payload, key=self._key, algorithm=Consts.DEFAULT_JWT_ALGORITHM)
        self._minted.append(token)
        return token

    def secrets(self) -> list[str]:
        return [form for token in self._minted for form in secret_forms(token)]

    def _call(self, doing: str, call: Any, *args: Any) -> Any:
        try:
            return call(*args)
        except GithubException as exc:
            status, message = exc.status, _message(exc)
            # "Integration not found": no app has this ID (GitHub says so for a JWT whose iss is unknown).
            if status == 401 or message.casefold() == "integration not found":
                raise PublishError(
                    f"GitHub refused the app's JWT while {doing} (401: {message or 'Unauthorized'}): check "
                    f"that {self.app_id!r} is the app's ID and the private key is one of the app's current keys",
                    permanent=True,
                ) from None
            if status == 404:
                raise PublishError(
                    f"GitHub answered 404 while {doing}: the app is not installed there, or the installation "
                    "was removed; install the app on the owner, or correct installationId",
                    permanent=True,
                ) from None
            if status == 403:
                raise PublishError(
                    f"GitHub refused {doing} (403: {message or 'Forbidden'}): the installation is suspended "
                    "or lacks Administration and Contents write permission",
                    permanent=True,
                ) from None
            if status >= 500 or status in (408, 409, 429):
                raise PublishError(
                    f"GitHub API error {status} while {doing}; will retry", permanent=False
                ) from None
            raise PublishError(f"GitHub answered {status} while {doing}: {message}", permanent=True) from None
        except PublishError:
            raise
        except Exception as exc:  # timeouts, no connection, a proxy's page ...
            raise transport_error(exc, "GitHub", self.api_url, doing) from None

    def installation_id(self, owner: str | None) -> int:
        """The configured installation, or the one of `owner` (an organisation, else a user)."""
        if self._installation_id is not None:
            return self._installation_id
        if owner is None:
            raise PublishError(
                "with GitHub App credentials and no installationId in the Secret, config.owner must name "
                "the organisation or user the app is installed on",
                permanent=True,
            )
        found = self._call(f"looking up the app's installation on {owner!r}", self._find, owner)
        self._installation_id = int(found.id)
        return self._installation_id

    def _find(self, owner: str) -> Any:
        try:
            return self._integration.get_org_installation(owner)
        except GithubException as exc:
            if exc.status != 404:
                raise
        return self._integration.get_user_installation(owner)

    def installation_owner(self) -> str:
        """The login of the account the configured installation belongs to."""
        assert self._installation_id is not None
        found = self._call(
            f"reading installation {self._installation_id}",
            self._integration.get_app_installation,
            self._installation_id,
        )
        return str(found.account.login)

    def token(self) -> str:
        """A token valid for at least `margin` more seconds: the current one, or a new one."""
        with self._lock:
            if self._token is None or self._expires_at - self.margin <= time.time():
                installation = self.installation_id(None)
                auth = self._call(
                    f"minting a token for installation {installation}",
                    self._integration.get_access_token,
                    installation,
                )
                self._token = str(auth.token)
                self._minted.append(self._token)
                expires = auth.expires_at
                self._expires_at = (
                    expires.timestamp()
                    if isinstance(expires, datetime)
                    else datetime.now(UTC).timestamp() + 3600
                )
            return self._token

    def close(self) -> None:
        self._integration.close()


class InstallationTokenAuth(Auth.Auth):
    """PyGithub authentication with the current token of `AppTokens` on every request."""

    def __init__(self, tokens: AppTokens) -> None:
        self._tokens = tokens

    @property
    def token_type(self) -> str:
        return "token"

    @property
    def token(self) -> str:
        return self._tokens.token()

    @property
    def _masked_token(self) -> str:
        return "(installation token removed)"
