"""Waiting for a project in memory, without a thread, and running the sync reconcile in kopf's pool.

An export created together with its project (the common case: one `kubectl apply` of both) finds
the project still rendering. Reporting Pending and waiting for the wake-up annotation costs a
status write, the annotation patch and a second diff-base patch; a render takes a second or two.
So a new export (no status yet) first waits here, in the event loop, while the project (as kopf's
index sees it) is rendering, for up to a bound; every project event wakes the waiters to look
again. An export that has a status says Pending at once, as before: a Failed export whose project
went back to work must not keep saying Failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
from collections.abc import Callable
from typing import Any

import kopf

from projectgen.api.v1alpha1 import GeneratedProjectPhase
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


def rendering(project: dict[str, Any] | None) -> bool:
    """The project is being rendered for its current spec, or about to be (no status yet): it
    settles in seconds. Waiting for a ConfigMap or a template (Pending) is not rendering."""
    if project is None or settled(project):
        return False
    return (project.get("status") or {}).get("phase") in (None, GeneratedProjectPhase.GENERATING)


async def until_settled(
    project: Callable[[], dict[str, Any] | None], timeout: float, appear: float = 3.0
) -> None:
    """Return once `project()` is there and not rendering (settled, or waiting), or after
    `timeout`; a project that is not there (yet: created together with the export, its watch
    event may come second) is given `appear` seconds."""
    condition = _shared()
    async with condition:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(condition.wait_for(lambda: project() is not None), appear)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(condition.wait_for(lambda: not rendering(project())), timeout)


async def in_worker(settings: kopf.OperatorSettings, fn: Callable[[], None]) -> None:
    """`fn()` in kopf's executor (PROJECTGEN_WORKERS threads), in this context: kopf.info and
    kopf.warn post their Events from there as from a sync handler."""
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(
        settings.execution.executor, functools.partial(contextvars.copy_context().run, fn)
    )
