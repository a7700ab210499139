"""How a delivery lands: the refs an export owns, and the decision push / pull request / nothing.

Where the base lives: in the target repository, as a commit the export owns under
`refs/projectgen/<export>/base` (tree = the render the branch received last, no parent).
Branch history is not a record: a squash merge rewrites the delivered commit into another one
and a force-push drops it, but a ref outside `refs/heads/` is touched by neither, costs the
repository one tree per export (the blobs are the branch's), travels with the repository
(a mirror, a new operator volume) and is fetched like any ref, with `--filter=blob:none`.
`refs/projectgen/<export>/pending` holds the render an open request delivers; it becomes the
base when the request is merged. The request itself comes from `refs/heads/projectgen/<export>`,
the only branch the export ever force-pushes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from projectgen.api.v1alpha1.repositoryexport import UpdateStrategy
from projectgen.export.update.merge import MergeResult


@dataclass(frozen=True)
class ExportRefs:
    branch: str
    """The request's branch name (without refs/heads/)."""
    base: str
    pending: str
    delivered: str
    """The last commit this export put on the target branch, pushed atomically with it: a crash
    between that push and the status write must not make the next Push look like a moved branch."""

    @classmethod
    def of(cls, export: str) -> ExportRefs:
        return cls(
            branch=f"projectgen/{export}",
            base=f"refs/projectgen/{export}/base",
            pending=f"refs/projectgen/{export}/pending",
            delivered=f"refs/projectgen/{export}/delivered",
        )


class Action(StrEnum):
    FIRST = "First"
    """The branch does not exist: the render is its first commit."""
    PUSH = "Push"
    """The merge goes on top of the target branch."""
    PULL_REQUEST = "PullRequest"
    """The merge goes on the export's branch, for a request."""
    NOTHING = "Nothing"
    """The target branch already holds everything the render changes."""


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str = ""
    """Why a Push became a request (status and an Event say it)."""


def decide(
    *,
    strategy: UpdateStrategy,
    head: str | None,
    delivered: str | None,
    merge: MergeResult | None,
) -> Decision:
    """`head`: the target branch now (None: absent). `delivered`: the commit this export put there
    last. `merge`: the three-way merge onto `head` (None when there is no head)."""
    if head is None or merge is None:
        return Decision(Action.FIRST)
    if merge.unchanged:
        return Decision(Action.NOTHING)
    if strategy == UpdateStrategy.PUSH:
        if head != delivered:
            known = f"{delivered[:12]}" if delivered else "no commit of this export"
            return Decision(
                Action.PULL_REQUEST,
                f"the branch moved since this export's last commit ({known}, now {head[:12]}): "
                "a pull request instead of a push",
            )
        if merge.conflicts:
            return Decision(
                Action.PULL_REQUEST,
                f"{len(merge.conflicts)} conflicts: a pull request instead of a push",
            )
        return Decision(Action.PUSH)
    return Decision(Action.PULL_REQUEST)
