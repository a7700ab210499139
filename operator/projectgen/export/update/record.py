"""The pull-request record: what a request says (title, body, draft, label) and what the export
does with the one it finds on its branch. Pure: the forges only carry it out.

One request per export: the forge is asked for the newest request whose head is the export's
branch, so a restart at any point (after the push, after the create call, before status)
finds the one it made instead of opening another. The body ends with a marker holding the
render's contentHash: a request closed without merging is not reopened for the same render,
and a merged one moves the base only to the render it delivered.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from projectgen.api.v1alpha1.repositoryexport import RequestState
from projectgen.export.update.delivery import Action
from projectgen.export.update.merge import MergeResult, PathList

CONFLICT_LABEL = "projectgen-conflicts"
"""The label a request with conflicts carries (created in the repository when missing)."""
_MARKER = "<!-- projectgen:contentHash={} -->"
_MARKER_RE = re.compile(r"<!-- projectgen:contentHash=([0-9a-f]{64}) -->")
_LISTED = 50


@dataclass(frozen=True)
class PullRequest:
    """A request as the forge reports it."""

    number: int
    url: str
    state: RequestState
    head_sha: str | None = None
    body: str = ""
    draft: bool = False

    @property
    def content_hash(self) -> str | None:
        """The render this request delivers, from the marker in its body."""
        found = _MARKER_RE.search(self.body or "")
        return found.group(1) if found else None


@dataclass(frozen=True)
class RequestText:
    title: str
    body: str
    draft: bool
    labels: tuple[str, ...] = ()
    """Every label the request carries: config.pullRequest's, and the conflict label while it has conflicts."""
    reviewers: tuple[str, ...] = ()
    assignees: tuple[str, ...] = ()
    """Asked for when the request is opened, not on each edit: a review once done is not requested again."""


def _section(title: str, listed: PathList) -> list[str]:
    if not listed.count:
        return []
    lines = [f"**{title}** ({listed.count})", ""]
    lines += [f"- `{p}`" for p in listed.paths[:_LISTED]]
    if listed.count > _LISTED:
        lines.append(f"- … and {listed.count - _LISTED} more")
    return [*lines, ""]


def describe(
    *,
    export: str,
    branch: str,
    content_hash: str,
    previous_hash: str | None,
    merge: MergeResult,
    namespace: str | None = None,
    created_by: str | None = None,
    labels: Sequence[str] = (),
    reviewers: Sequence[str] = (),
    assignees: Sequence[str] = (),
) -> RequestText:
    """Title and body of the export's request: from which render to which, what changes, what conflicts.
    `created_by` (the export's status.createdBy): a reviewer sees who asked for it, not only the bot."""
    conflicts = len(merge.conflicts)
    title = f"projectgen: update from {export} ({content_hash[:12]})"
    if conflicts:
        title += f", {conflicts} conflict{'s' if conflicts != 1 else ''}"
    lines = [
        f"The project of RepositoryExport `{export}` was regenerated: render "
        f"`{(previous_hash or 'unknown')[:12]}` → `{content_hash[:12]}`.",
        f"This request merges the new render with `{branch}` as it is now (a three-way merge against the "
        "render delivered last): changes made in this repository stay.",
        "",
    ]
    if created_by:
        # A code span: a cluster user name is no forge handle and must not @-mention anyone.
        who = created_by.replace("`", "'")
        where = f"{namespace}/{export}" if namespace else export
        lines = [f"Requested by `{who}` via RepositoryExport `{where}`.", "", *lines]
    lines += [
        *_section("Added", merge.added),
        *_section("Changed", merge.changed),
        *_section("Deleted", merge.deleted),
    ]
    if conflicts:
        lines += [f"**Conflicts** ({conflicts}): resolve them on this branch before merging.", ""]
        lines += [f"- `{c.path}`: {_EXPLAINED[c.kind]}" for c in merge.conflicts[:_LISTED]]
        if conflicts > _LISTED:
            lines.append(f"- … and {conflicts - _LISTED} more")
        lines.append("")
    lines.append(_MARKER.format(content_hash))
    return RequestText(
        title=title,
        body="\n".join(lines),
        draft=bool(conflicts),
        labels=tuple(dict.fromkeys([*labels, *([CONFLICT_LABEL] if conflicts else [])])),
        reviewers=tuple(reviewers),
        assignees=tuple(assignees),
    )


_EXPLAINED = {
    "content": "both changed the same lines: the file carries `<<<<<<< before updating` / "
    "`>>>>>>> after updating` markers",
    "binary": "both changed it and it cannot be merged line by line: this branch keeps the repository's version",
    "deletedByTeam": "deleted here, changed by the template: the template's version is back",
    "droppedByTemplate": "changed here, dropped by the template: the file stays",
}


class Step(StrEnum):
    CREATE = "Create"
    UPDATE = "Update"
    CLOSE = "Close"
    NONE = "None"


@dataclass(frozen=True)
class RequestPlan:
    step: Step
    note: str = ""
    closed: PullRequest | None = field(default=None)
    """A request closed without merging for this very render: left closed."""


def plan(*, action: Action, latest: PullRequest | None, content_hash: str) -> RequestPlan:
    """What to do with the newest request of the export's branch after a delivery."""
    is_open = latest is not None and latest.state == RequestState.OPEN
    if action != Action.PULL_REQUEST:
        if is_open:
            why = "the branch already holds this render" if action == Action.NOTHING else "delivered by push"
            return RequestPlan(Step.CLOSE, f"Closed by projectgen: {why}; nothing left to merge.")
        return RequestPlan(Step.NONE)
    if is_open:
        return RequestPlan(Step.UPDATE)
    if latest is not None and latest.state == RequestState.CLOSED and latest.content_hash == content_hash:
        return RequestPlan(Step.NONE, closed=latest)
    return RequestPlan(Step.CREATE)
