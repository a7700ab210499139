"""The update check's loop for one project (a kopf daemon): sleep to the project's next slot,
ask the shared checker for the listing of each template it follows, decide (`follow.decide`),
and write the outcome to CHECK_ANNOTATION only when it changed.

The daemon makes no API request while nothing changes: kopf keeps `body` current from its watch,
and the listings are shared (`generation/checker.py`). The annotation wakes the project's handler
(`generatedproject.template_checked`), which renders or reports: status has one writer.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import kopf

from projectgen.api.v1alpha1 import GeneratedProjectPhase
from projectgen.api.v1alpha1.generatedproject import PLURAL
from projectgen.generation.checker import Checker
from projectgen.generation.follow import (
    CHECK_ANNOTATION,
    Followed,
    Listing,
    decide,
    followed,
    needs_writing,
    slot_start,
)
from projectgen.handlers.context import Context
from projectgen.handlers.kube import ApiUnavailable, Forbidden, Kube


def _plan(body: Any, minimum: float) -> list[Followed]:
    status = body.get("status") or {}
    meta = body.get("metadata") or {}
    if status.get("phase") != GeneratedProjectPhase.COMPLETED or status.get("observedGeneration") != meta.get(
        "generation"
    ):
        return []
    return followed(body.get("spec") or {}, status, minimum)


def next_check(plan: list[Followed], now: float) -> float:
    """Seconds until the earliest next slot of the followed sources."""
    return min(slot_start(now, f.every, f.url) + f.every - now for f in plan)


async def follow(ctx: Context, checker: Checker, body: Any, stopped: kopf.DaemonStopped, logger: Any) -> None:
    minimum = ctx.settings.template_min_interval
    while not stopped:
        plan = _plan(body, minimum)
        if not plan:
            await stopped.wait(minimum)  # re-read the (live) body: it may settle meanwhile
            continue
        await stopped.wait(next_check(plan, time.time()))
        plan = _plan(body, minimum)
        if stopped or not plan:
            continue
        meta = body["metadata"]
        kube = Kube(meta["namespace"])
        guard = ctx.outbound.guard(meta["namespace"], kube.namespace_labels)
        listings: dict[str, Listing] = {}
        for f in plan:
            if f.url not in listings:
                listings[f.url] = await asyncio.to_thread(checker.listing, f.url, guard, f.every)
        outcome = decide(plan, listings)
        if not needs_writing(outcome, (meta.get("annotations") or {}).get(CHECK_ANNOTATION)):
            continue
        value = outcome.annotation()
        logger.info(
            "template check: %s", "; ".join([m.message for m in outcome.moves] + list(outcome.problems))
        )
        try:
            await asyncio.to_thread(kube.patch_annotations, PLURAL, meta["name"], {CHECK_ANNOTATION: value})
        except (ApiUnavailable, Forbidden) as exc:
            logger.warning("template check: cannot record the outcome (%s); next slot retries", exc)
