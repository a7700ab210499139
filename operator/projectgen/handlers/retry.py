"""How long a handler waits before it tries again: one policy for both kinds."""

from __future__ import annotations

RETRY_CAP = 120.0
"""The longest wait, in seconds, between two attempts that failed for a cause that may heal.

Two minutes, not five: the causes are a person's fix (a ConfigMap or Secret created, RBAC
granted) or the API server coming back, and the fix should show within two minutes. A forge that
asks for longer (Retry-After) is still obeyed: `at_least` goes above the cap.
"""


def retry_delay(retry: int, at_least: float | None = None) -> float:
    """5 s, doubling with each retry up to RETRY_CAP, and never less than `at_least`."""
    return max(float(min(5 * 2**retry, RETRY_CAP)), at_least or 0.0)
