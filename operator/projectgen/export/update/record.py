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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from projectgen.api.v1alpha1.generatedproject import TemplateResolution
from projectgen.api.v1alpha1.repositoryexport import RequestState
from projectgen.export.update.delivery import Action
from projectgen.export.update.merge import MergeResult, PathList

CONFLICT_LABEL = "projectgen-conflicts"
"""The label a request with conflicts carries (created in the repository when missing)."""
_MARKER = "<!-- projectgen:contentHash={} -->"
_MARKER_RE = re.compile(r"<!-- projectgen:contentHash=([0-9a-f]{64}) -->")
_LISTED = 50
_TITLE_MAX = 240
"""GitHub's and Gitea's limit is 255 characters, a draft prefix included: a long template name is cut."""


@dataclass(frozen=True)
class TemplateRef:
    """What one template source of a render came from: the request names the move from the render
    delivered last to this one. Recorded in the render commit (a trailer), so it lives as long as
    the export's base ref does, whatever happens to the export's status."""

    source: int
    url: str
    """Without credentials (status.templates holds no others)."""
    ref: str
    """The tag rendered, else the commit."""

    def trailer(self) -> str:
        return f"{self.source} {self.url} {self.ref}"

    @classmethod
    def from_trailer(cls, value: str) -> TemplateRef | None:
        parts = value.strip().split(" ")
        if len(parts) != 3 or not parts[0].isdigit():
            return None
        return cls(int(parts[0]), parts[1], parts[2])


def template_refs(resolved: Sequence[Mapping[str, object]]) -> tuple[TemplateRef, ...]:
    """The project's status.templates as refs; a record that does not read is left out."""
    out = []
    for raw in resolved:
        try:
            rec = TemplateResolution.model_validate(raw)
        except ValueError:
            continue
        out.append(TemplateRef(rec.source, rec.url, rec.tag or rec.commit))
    return tuple(out)


def template_moves(
    before: Sequence[TemplateRef], after: Sequence[TemplateRef]
) -> list[tuple[TemplateRef | None, TemplateRef]]:
    """(from, to) for each template source of the new render; from is None when the render delivered
    last did not record it (a new source, or a base from before templates were recorded)."""
    old = {(t.source, t.url): t for t in before}
    return [(old.get((t.source, t.url)), t) for t in after]


def _template_name(url: str) -> str:
    tail = url.rstrip("/").rsplit("/", 1)[-1]
    return tail.removesuffix(".git") or url


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
    templates_from: Sequence[TemplateRef] = (),
    templates_to: Sequence[TemplateRef] = (),
) -> RequestText:
    """Title and body of the export's request: from which render to which, what changes, what conflicts.
    `created_by` (the export's status.createdBy): a reviewer sees who asked for it, not only the bot.
    `templates_from` / `templates_to`: the template refs of the render delivered last and of this one;
    a template that moved is named in the title and the body (a reviewer sees the version bump)."""
    conflicts = len(merge.conflicts)
    moves = template_moves(templates_from, templates_to)
    moved = [(old, new) for old, new in moves if old is not None and old.ref != new.ref]
    title = f"projectgen: update from {export} ({content_hash[:12]})"
    if moved:
        old, new = moved[0]
        title += f": template {_template_name(new.url)} {old.ref} → {new.ref}"
        if len(moved) > 1:
            title += f" and {len(moved) - 1} more"
    if conflicts:
        title += f", {conflicts} conflict{'s' if conflicts != 1 else ''}"
    lines = [
        f"The project of RepositoryExport `{export}` was regenerated: render "
        f"`{(previous_hash or 'unknown')[:12]}` → `{content_hash[:12]}`.",
        f"This request merges the new render with `{branch}` as it is now (a three-way merge against the "
        "render delivered last): changes made in this repository stay.",
        "",
    ]
    named = [
        f"Template `{new.url}` moved: `{old.ref}` → `{new.ref}`."
        if old is not None
        else f"Template `{new.url}` at `{new.ref}`."
        for old, new in moves
        if old is None or old.ref != new.ref
    ]
    lines += [*named, ""] if named else []
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
        lines += [f"- `{c.path}`: {EXPLAINED[c.kind]}" for c in merge.conflicts[:_LISTED]]
        if conflicts > _LISTED:
            lines.append(f"- … and {conflicts - _LISTED} more")
        lines.append("")
    lines.append(_MARKER.format(content_hash))
    return RequestText(
        title=title[:_TITLE_MAX],
        body="\n".join(lines),
        draft=bool(conflicts),
        labels=tuple(dict.fromkeys([*labels, *([CONFLICT_LABEL] if conflicts else [])])),
        reviewers=tuple(reviewers),
        assignees=tuple(assignees),
    )


EXPLAINED: dict[str, str] = {
    "content": "both changed the same lines: the file carries `<<<<<<< before updating` / "
    "`>>>>>>> after updating` markers",
    "binary": "both changed it and it cannot be merged line by line: this branch keeps the repository's version",
    "deletedByTeam": "deleted here, changed by the template: the template's version is back",
    "droppedByTemplate": "changed here, dropped by the template: the file stays",
}
"""What each conflict kind means for the reviewer: the request and `projectgen diff --base` say it."""


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
