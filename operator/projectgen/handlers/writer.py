"""Writes one status patch per transition of one object, and the Event a person should see."""

from __future__ import annotations

from typing import Any

import kopf

from projectgen.api.v1alpha1 import GeneratedProjectPhase, RepositoryExportPhase
from projectgen.api.v1alpha1.common import CREATED_BY_ANNOTATION
from projectgen.api.v1alpha1.generatedproject import PLURAL as PROJECTS
from projectgen.api.v1alpha1.repositoryexport import PLURAL as EXPORTS
from projectgen.handlers.kube import Kube
from projectgen.handlers.status import Phase, State, transition

FAILED: dict[str, Phase] = {PROJECTS: GeneratedProjectPhase.FAILED, EXPORTS: RepositoryExportPhase.FAILED}


def unchanged(new: dict[str, Any], old: dict[str, Any]) -> bool:
    """True when a patch would only restamp what the status already says."""

    def essence(conds: Any) -> list[tuple[Any, ...]]:
        return [(c.get("type"), c.get("status"), c.get("reason"), c.get("message")) for c in conds or []]

    return essence(new.get("conditions")) == essence(old.get("conditions")) and all(
        old.get(k) == v for k, v in new.items() if k != "conditions"
    )


class StatusWriter:
    """`write(phase, state, reason, message, **fields)`: one patch of the status subresource.

    Every patch carries createdBy (the admission-stamped annotation, same for both kinds) until
    status records it. A transition that would only restamp the current status is skipped, except
    failures (their Event is the point).
    """

    def __init__(self, body: kopf.Body, plural: str, patch: kopf.Patch | None = None) -> None:
        meta = body["metadata"]
        self.patch = patch
        self.body = body
        self.plural = plural
        self.name = meta["name"]
        self.kube = Kube(meta["namespace"])
        self.generation = int(meta.get("generation") or 1)
        self.status: dict[str, Any] = dict(body.get("status") or {})
        created_by = (meta.get("annotations") or {}).get(CREATED_BY_ANNOTATION)
        self.always = {"createdBy": created_by} if created_by and not self.status.get("createdBy") else {}

    def last(self, phase: Phase, state: State, reason: str, message: str, **fields: Any) -> None:
        """The handler's last transition, in kopf's patch: kopf sends it when the handler returns,
        in one status PATCH with its diff base (see diffbase.py). Without a patch, written at once."""
        self(phase, state, reason, message, into=self.patch, **fields)

    def __call__(
        self,
        phase: Phase,
        state: State,
        reason: str,
        message: str,
        *,
        into: kopf.Patch | None = None,
        **fields: Any,
    ) -> None:
        patch = transition(
            phase,
            state,
            generation=self.generation,
            reason=reason,
            message=message,
            previous=self.status,
            **self.always,
            **fields,
        )
        if state is not State.FAILED and unchanged(patch, self.status):
            return
        if into is not None:
            into.status.update(patch)
        else:
            self.kube.patch_status(self.plural, self.name, patch)
        self.status.update(patch)

    def fail(self, reason: str, message: str, *, event: bool = True) -> None:
        """Phase Failed, Stalled=True, and a Warning Event with the same message."""
        self(FAILED[self.plural], State.FAILED, reason, message)
        if event:
            kopf.warn(self.body, reason="Failed", message=message)
