"""What every forge client needs from an HTTP answer: how long to wait, and what a failure below the API means."""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Collection, Mapping

import requests

from projectgen.export.publish.model import REFUSED_401, PublishError


def retry_after_from(headers: Mapping[str, str], reset_header: str) -> float | None:
    """Seconds to wait from `Retry-After` (seconds or HTTP date), else from an epoch reset header."""
    lower = {k.lower(): v for k, v in headers.items()}
    value = lower.get("retry-after", "").strip()
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
            except (TypeError, ValueError):
                pass
    reset = lower.get(reset_header.lower(), "").strip()
    if reset:
        try:
            return float(max(0, math.ceil(float(reset) - time.time())))
        except ValueError:
            pass
    return None


def transport_error(exc: Exception, host: str, url: str, doing: str) -> PublishError:
    """What went wrong below the API: no answer, no connection, or an answer that is not the API's.

    All of them may heal (a proxy, a restart, a network blip): temporary."""
    if isinstance(exc, requests.Timeout):
        return PublishError(f"the {host} API at {url} did not answer in time while {doing}", permanent=False)
    if isinstance(exc, requests.RequestException | OSError):
        return PublishError(
            f"could not reach the {host} API at {url} while {doing} ({type(exc).__name__})", permanent=False
        )
    return PublishError(
        f"unexpected answer from the {host} API at {url} while {doing} ({type(exc).__name__})",
        permanent=False,
    )


def status_error(
    forge: str,
    status: int,
    doing: str,
    message: str,
    *,
    scope_hint: str,
    refused: Collection[int],
    retried: Collection[int] = (408,),
) -> PublishError:
    """The part of every forge's error mapping that is the same: what 401, 403, 404, a refusal, a
    5xx and anything else mean. Each forge decides its rate limits (and its own 422s) before this,
    and names which statuses it ``refused`` (permanent) and ``retried`` besides 5xx."""
    if status == 401:
        return PublishError(REFUSED_401, permanent=True)
    if status == 403:
        return PublishError(
            f"the token lacks permission for {doing} (403: {message or 'Forbidden'}): {scope_hint}",
            permanent=True,
        )
    if status == 404:
        return PublishError(f"{forge} answered 404 Not Found while {doing}", permanent=True)
    if status in refused:
        default = "it already exists" if status == 409 else ""
        return PublishError(f"{forge} refused {doing} ({status}): {message or default}", permanent=True)
    if status >= 500 or status in retried:
        return PublishError(f"{forge} API error {status} while {doing}; will retry", permanent=False)
    return PublishError(f"{forge} answered {status} while {doing}: {message}", permanent=True)
