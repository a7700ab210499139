"""Waiting for a project in memory, without a thread, and running the sync reconcile in kopf's pool.

An export created together with its project (the common case: one `kubectl apply` of both) finds
the project still rendering. Reporting Pending and waiting for the wake-up annotation costs a
status write, the annotation patch and a second diff-base patch; a render takes a second or two.
So the export handler first waits here, in the event loop, until the project (as kopf's index
sees it) has settled, for up to a bound; every project event wakes the waiters to look again.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
from collections.abc import Callable
from typing import Any

import kopf

from projectgen.handlers.exportdecision import settled

_condition: asyncio.Condition | None = None


def _shared() -> asyncio.Condition:
    global _condition
    if _condition is None:
        _condition = asyncio.Condition()
    return _condition


async def changed() -> None:
    """A project event was indexed: the waiters look again."""
    condition = _shared()
    async with condition:
        condition.notify_all()


async def until_settled(project: Callable[[], dict[str, Any] | None], timeout: float) -> None:
    """Return once `project()` is absent or settled, or after `timeout` seconds."""

    def free() -> bool:
        current = project()
        return current is None or settled(current)

    if free():
        return
    condition = _shared()
    async with condition:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(condition.wait_for(free), timeout)


async def in_worker(settings: kopf.OperatorSettings, fn: Callable[[], None]) -> None:
    """`fn()` in kopf's executor (PROJECTGEN_WORKERS threads), in this context: kopf.info and
    kopf.warn post their Events from there as from a sync handler."""
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(
        settings.execution.executor, functools.partial(contextvars.copy_context().run, fn)
    )
