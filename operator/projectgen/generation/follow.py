"""Following a template: the pure decisions of the update check. No git, no kopf, no API calls.

A project follows each of its template sources whose ref may move (a version constraint, a
branch, or no ref). One listing of a repository's refs (per URL and outbound verdict, per
interval) is shared by every project that follows it; each project then decides here, from its
status and that listing, whether to render again (the resolution moved), to report a problem (the
host is down, the tag it resolved to was deleted) or to do nothing. A check never renders on a
failure and never rewrites a Completed project: it keeps what it has until a check succeeds.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from projectgen.api.v1alpha1.generatedproject import RefKind, TemplateResolution
from projectgen.generation import refs

DEFAULT_INTERVAL = 3600.0
"""Seconds between checks when a source sets no updateInterval: new template versions reach
projects within the hour, at one listing per template per hour."""
DEFAULT_MINIMUM = 60.0
"""The operator's floor (PROJECTGEN_TEMPLATE_MIN_INTERVAL): no project makes the operator list a
template host more often than once a minute."""

_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
CHECK_ANNOTATION = "template.projectgen.io/check"
"""Written by the update check on a project whose check outcome changed; wakes its handler."""
TEMPLATE_CHECKED = "TemplateChecked"
"""The condition that reports a failed update check (False) and its recovery (True)."""


def parse_duration(text: str) -> float:
    """Seconds in a Kubernetes (Go) duration: '1h', '90s', '1h30m'. Raises ValueError."""
    pos, total = 0, 0.0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT[match.group(2)]
        pos = match.end()
    if not text or pos != len(text):
        raise ValueError(f"{text!r} is not a duration such as '1h', '15m' or '90s'")
    return total


def interval(asked: str | None, minimum: float) -> float | None:
    """The seconds between checks of one source: the asked duration raised to the minimum, the
    default when unset; None when it asks never to check ('0s')."""
    if asked is None:
        return max(DEFAULT_INTERVAL, minimum)
    seconds = parse_duration(asked)
    if seconds == 0:
        return None
    return max(seconds, minimum)


def slot_start(now: float, every: float, key: str) -> float:
    """The start of the current check slot of `key` (a template URL): slots repeat every `every`
    seconds at an offset given by the key's hash, so checks of different templates spread over
    the interval while every project of one template checks in the same slot (one listing)."""
    offset = (
        int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % max(int(every * 1000), 1) / 1000
    )
    return now - ((now - offset) % every)


@dataclass(frozen=True)
class Followed:
    """One template source a project follows, as its status recorded it at the last render."""

    url: str
    """The URL as the spec gives it (credentials included: the listing needs them)."""
    recorded: TemplateResolution
    every: float


def followed(spec: Mapping[str, object], status: Mapping[str, object], minimum: float) -> list[Followed]:
    """The sources of a rendered project to check: those whose recorded ref may move, still the
    same URL and ref in the spec, with an interval."""
    sources = spec.get("sources") or []
    out = []
    for raw in status.get("templates") or []:  # type: ignore[attr-defined]
        try:
            recorded = TemplateResolution.model_validate(raw)
        except ValueError:
            continue
        if not RefKind(recorded.kind).follows or recorded.source >= len(sources):  # type: ignore[arg-type]
            continue
        template = (sources[recorded.source] or {}).get("template") or {}  # type: ignore[index]
        url = template.get("url")
        if not url or template.get("ref") != recorded.ref:
            continue  # the spec changed: its own render records the new resolution
        try:
            every = interval(template.get("updateInterval"), minimum)
        except ValueError:
            continue
        if every is not None:
            out.append(Followed(url, recorded, every))
    return out


@dataclass(frozen=True)
class Move:
    source: int
    url: str
    before: str
    after: str

    @property
    def message(self) -> str:
        return f"template {self.url} moved from {self.before} to {self.after}"


@dataclass(frozen=True)
class Outcome:
    """What one check found for one project: moves to render, problems to report."""

    moves: tuple[Move, ...] = ()
    problems: tuple[str, ...] = ()

    def annotation(self) -> str:
        """The value of CHECK_ANNOTATION: the same outcome gives the same value (no patch). A move
        names where it starts, so the same move from another render is a new value."""
        return json.dumps(
            {"moves": [[m.source, m.before, m.after] for m in self.moves], "problems": list(self.problems)},
            separators=(",", ":"),
        )


def read_annotation(value: str | None) -> tuple[list[tuple[int, str]], list[str]]:
    if not value:
        return [], []
    try:
        data = json.loads(value)
        moves = [(int(m[0]), str(m[-1])) for m in data.get("moves") or []]
        return moves, [str(p) for p in data.get("problems") or []]
    except (ValueError, TypeError, AttributeError):
        return [], []


Listing = refs.Refs | str
"""A repository's refs, or why they could not be listed."""


def decide(sources: Sequence[Followed], listings: Mapping[str, Listing]) -> Outcome:
    """Compare each followed source's recorded resolution with its repository's listing."""
    moves: list[Move] = []
    problems: list[str] = []
    for f in sources:
        rec = f.recorded
        listing = listings.get(f.url)
        if listing is None:
            continue
        if isinstance(listing, str):
            problems.append(f"sources[{rec.source}]: checking template {rec.url} failed: {listing}")
            continue
        if rec.tag is not None and rec.tag not in listing.tags:
            problems.append(
                f"sources[{rec.source}]: tag {rec.tag} of template {rec.url}, which this project was "
                f"rendered from, was deleted; the project keeps what {rec.tag} rendered"
            )
            continue
        try:
            now = refs.resolve(rec.ref, listing)
        except refs.RefError as exc:
            problems.append(
                f"sources[{rec.source}]: template {rec.url}: {exc}; the project keeps what it has"
            )
            continue
        if now.commit != rec.commit:
            before = rec.tag or rec.commit[:12]
            moves.append(Move(rec.source, rec.url, before, now.label))
    return Outcome(tuple(moves), tuple(problems))


def moved_events(before: Sequence[Mapping[str, object]], after: Sequence[TemplateResolution]) -> list[str]:
    """ "template <url> moved from v1.2.0 to v1.3.0" for each source whose render moved."""
    old = {}
    for raw in before:
        try:
            rec = TemplateResolution.model_validate(raw)
        except ValueError:
            continue
        old[rec.source] = rec
    out = []
    for rec in after:
        prev = old.get(rec.source)
        if prev is None or prev.commit == rec.commit or prev.url != rec.url:
            continue
        out.append(
            Move(rec.source, rec.url, prev.tag or prev.commit[:12], rec.tag or rec.commit[:12]).message
        )
    return out


@dataclass(frozen=True)
class Verdict:
    render: bool
    condition: tuple[bool, str, str] | None = None
    """(ok, reason, message) of the TemplateChecked condition to write, None: leave it."""


def check_verdict(
    status: Mapping[str, object], moves: Sequence[tuple[int, str]], problems: Sequence[str]
) -> Verdict:
    """What a Completed project does with a check outcome: report problems (and nothing else:
    the project keeps what it has), clear a reported problem once a check succeeds, render when a
    move is not yet reflected in status."""
    before = next(
        (c for c in status.get("conditions") or [] if c.get("type") == TEMPLATE_CHECKED),  # type: ignore[attr-defined]
        None,
    )
    if problems:
        message = "; ".join(problems) + "; will check again at the next interval"
        if before is not None and before.get("status") == "False" and before.get("message") == message:
            return Verdict(render=False)
        return Verdict(render=False, condition=(False, "CheckFailed", message))
    condition = None
    if before is not None and before.get("status") == "False":
        condition = (True, "Checked", "the last template check succeeded")
    recorded = {}
    for raw in status.get("templates") or []:  # type: ignore[attr-defined]
        recorded[raw.get("source")] = raw.get("tag") or str(raw.get("commit") or "")[:12]
    pending = any(recorded.get(source) != after for source, after in moves)
    return Verdict(render=pending, condition=condition)


def needs_writing(outcome: Outcome, current: str | None) -> bool:
    """Whether the check must write its outcome: a new move or problem, or a problem to clear.
    A check that finds nothing leaves an old move in place (its render recorded it in status):
    no write, no wake-up, when a project has just caught up."""
    if outcome.moves or outcome.problems:
        return outcome.annotation() != current
    return bool(read_annotation(current)[1])
