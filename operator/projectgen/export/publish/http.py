"""What every forge client needs from an HTTP answer: how long to wait, and what a failure below the API means."""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Mapping

import requests

from projectgen.export.publish.model import PublishError


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
