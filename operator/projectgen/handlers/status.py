"""Pure builders of status patches: kstatus conditions and phases. No kopf, no API calls.

kstatus reads `Ready`, `Reconciling` and `Stalled`; every transition writes all three,
each with the generation it was computed for, so `kubectl wait --for=condition=...`
and GitOps tools (Argo CD, Flux) see one consistent picture.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from projectgen.api.v1alpha1 import ConditionStatus, GeneratedProjectPhase, RepositoryExportPhase
from projectgen.api.v1alpha1.common import MAX_MESSAGE

Phase = GeneratedProjectPhase | RepositoryExportPhase


class State(Enum):
    WAITING = "waiting"  # in progress, nothing to do until something else happens
    WORKING = "working"  # in progress, the operator is at it
    READY = "ready"
    FAILED = "failed"


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def clip(message: str, limit: int = MAX_MESSAGE) -> str:
    return message if len(message) <= limit else message[: limit - 15] + " …(truncated)"


def conditions(
    state: State,
    *,
    generation: int,
    reason: str,
    message: str,
    previous: list[Mapping[str, Any]] | None = None,
    at: str | None = None,
) -> list[dict[str, Any]]:
    """The three kstatus conditions for a state, keeping lastTransitionTime when a status is unchanged."""
    true, false, unknown = ConditionStatus.TRUE, ConditionStatus.FALSE, ConditionStatus.UNKNOWN
    values = {
        State.WAITING: (false, true, false),
        State.WORKING: (unknown, true, false),
        State.READY: (true, false, false),
        State.FAILED: (false, false, true),
    }[state]
    old = {c.get("type"): c for c in previous or []}
    stamp = at or now()
    message = clip(message)
    out = []
    for type_, status in zip(("Ready", "Reconciling", "Stalled"), values, strict=True):
        before = old.get(type_)
        changed = before is None or before.get("status") != status
        out.append(
            {
                "type": type_,
                "status": str(status),
                "reason": reason,
                "message": message if (status == true or type_ == "Ready") else "",
                "observedGeneration": generation,
                "lastTransitionTime": stamp
                if changed or not before
                else before.get("lastTransitionTime", stamp),
            }
        )
    kstatus = {"Ready", "Reconciling", "Stalled"}
    return out + [dict(c) for c in previous or [] if c.get("type") not in kstatus]


def set_condition(
    previous: list[Mapping[str, Any]] | None,
    type_: str,
    status: ConditionStatus,
    *,
    generation: int,
    reason: str,
    message: str,
    at: str | None = None,
) -> list[dict[str, Any]]:
    """`previous` with one condition set (kept in place, lastTransitionTime kept when its status
    is unchanged); the others untouched."""
    out = [dict(c) for c in previous or []]
    before = next((c for c in out if c.get("type") == type_), None)
    stamp = at or now()
    entry = {
        "type": type_,
        "status": str(status),
        "reason": reason,
        "message": clip(message),
        "observedGeneration": generation,
        "lastTransitionTime": before.get("lastTransitionTime", stamp)
        if before is not None and before.get("status") == str(status)
        else stamp,
    }
    if before is None:
        return [*out, entry]
    return [entry if c is before else c for c in out]


def without_condition(previous: list[Mapping[str, Any]] | None, type_: str) -> list[dict[str, Any]]:
    return [dict(c) for c in previous or [] if c.get("type") != type_]


def transition(
    phase: Phase,
    state: State,
    *,
    generation: int,
    reason: str,
    message: str,
    previous: Mapping[str, Any] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """One status patch: phase, conditions, observedGeneration and any other fields (None deletes)."""
    patch: dict[str, Any] = {
        "phase": str(phase),
        "observedGeneration": generation,
        "conditions": conditions(
            state,
            generation=generation,
            reason=reason,
            message=message,
            previous=list((previous or {}).get("conditions") or []),
        ),
    }
    if state is State.FAILED:
        patch["errorMessage"] = clip(message)
    elif "errorMessage" not in fields:
        patch["errorMessage"] = None
    patch.update(fields)
    return patch
