"""Tokens out of every message: the forms a token can take in text, and their removal.

Every message that leaves the publish package (exception text, log records) is built without the
token and redacted once more on the way out, with these two functions.
"""

from __future__ import annotations

import base64
import urllib.parse
from collections.abc import Iterable

from projectgen.export.publish.model import GIT_USERNAMES


def secret_forms(token: str) -> list[str]:
    """The token as it could appear in text: raw, URL-quoted, and inside basic-auth headers."""
    forms = {token, urllib.parse.quote(token, safe="")}
    for user in (*GIT_USERNAMES.values(), ""):
        raw = f"{user}:{token}".encode()
        forms.add(base64.b64encode(raw).decode())
        forms.add(base64.urlsafe_b64encode(raw).decode())
    return sorted((f for f in forms if len(f) >= 4), key=len, reverse=True)


def private_key_forms(pem: str) -> list[str]:
    """A PEM private key as it could appear in text: whole, and each base64 line of its body (a
    traceback or a library's message may quote one line)."""
    lines = [line.strip() for line in pem.strip().splitlines()]
    body = [line for line in lines if line and not line.startswith("-----") and ":" not in line]
    forms = {pem, pem.strip(), "".join(body), *body}
    return sorted((f for f in forms if len(f) >= 16), key=len, reverse=True)


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
