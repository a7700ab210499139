"""Publish a rendered tree to a forge: create (or find) the repository, push one commit.

`model` holds the types every part shares, `http` and `redaction` the helpers; `github` and
`gitlab` are one forge each and `gitpush` the git side, all importing only those three; `flow`
imports them and picks the forge from a table. This module re-exports what callers use.
"""

from projectgen.export.publish.flow import HOSTS, publish, read_request
from projectgen.export.publish.model import (
    DEFAULT_AUTHOR,
    REFUSED_401,
    GitHubApp,
    PublishError,
    PublishRequest,
    PublishResult,
    PublishSettings,
)
from projectgen.export.publish.redaction import redact, secret_forms

__all__ = [
    "DEFAULT_AUTHOR",
    "HOSTS",
    "REFUSED_401",
    "GitHubApp",
    "PublishError",
    "PublishRequest",
    "PublishResult",
    "PublishSettings",
    "publish",
    "read_request",
    "redact",
    "secret_forms",
]
