"""Whether the tests run in CI, read in one place.

A test that cannot run on this machine (a tool or binary missing) is skipped on a developer's
machine but fails in CI: there, a skip would silently drop the very check the test exists for.
Every such guard calls `unavailable()`, so they all agree on what "in CI" means. `.ci/run` exports
``CI=true`` itself; runners that set ``CI=1`` or ``CI=yes`` count too.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

_TRUTHY = frozenset({"1", "true", "yes", "on"})


def in_ci() -> bool:
    """True when ``CI`` holds one of the usual truthy values (any case)."""
    return os.environ.get("CI", "").strip().lower() in _TRUTHY


def unavailable(reason: str) -> NoReturn:
    """Fail in CI, skip elsewhere, saying why the test cannot run here."""
    if in_ci():
        pytest.fail(f"cannot run in CI: {reason}")
    pytest.skip(reason)
