"""The update check's decisions (follow.py) and its shared listings (checker.py) over a real git
server, counted at the server."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from test_generation_template import git, publish, server, work

from projectgen import outbound
from projectgen.api.v1alpha1.generatedproject import TemplateResolution
from projectgen.generation import refs
from projectgen.generation.checker import Checker
from projectgen.generation.errors import GenerationError
from projectgen.generation.follow import (
    TEMPLATE_CHECKED,
    Followed,
    check_verdict,
    decide,
    followed,
    interval,
    moved_events,
    needs_writing,
    parse_duration,
    read_annotation,
    slot_start,
)
from projectgen.generation.template import list_refs
from projectgen_dev.gitserver import GitHTTPServer

__all__ = ["server", "work"]  # fixtures

URL = "https://git.example/t.git"
A, B, C = "a" * 40, "b" * 40, "c" * 40


def rec(ref: str | None, kind: str, tag: str | None, commit: str, source: int = 0) -> TemplateResolution:
    return TemplateResolution(source=source, url=URL, ref=ref, kind=kind, tag=tag, commit=commit)  # type: ignore[arg-type]


def listing(**tags: str) -> refs.Refs:
    return refs.Refs(tags={k.replace("_", "."): v for k, v in tags.items()}, branches={"main": C}, head=C)


@pytest.mark.parametrize(
    ("text", "seconds"), [("1h", 3600), ("90s", 90), ("1h30m", 5400), ("500ms", 0.5), ("0s", 0)]
)
def test_durations_read_as_kubernetes_writes_them(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "1d", "h", "1h ", "-1s", "1.s"])
def test_other_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_interval_defaults_to_an_hour_is_raised_to_the_floor_and_zero_never_checks() -> None:
    assert interval(None, 60) == 3600 and interval("10s", 60) == 60 and interval("5m", 60) == 300
    assert interval("0s", 60) is None


def test_slots_spread_templates_and_align_projects_of_one_template() -> None:
    a = slot_start(10_000.0, 60, URL)
    assert (
        a <= 10_000.0 < a + 60
        and slot_start(a + 59.9, 60, URL) == a
        and slot_start(a + 60, 60, URL) == a + 60
    )
    offsets = {slot_start(10_000.0, 3600, f"https://git.example/{i}.git") % 3600 for i in range(50)}
    assert len(offsets) == 50  # fifty templates, fifty moments in the hour


def test_only_following_sources_of_a_completed_render_with_an_unchanged_spec_are_checked() -> None:
    spec = {
        "sources": [
            {"template": {"url": URL, "ref": ">=1,<2", "updateInterval": "5m"}},
            {"template": {"url": URL, "ref": "v1.0.0"}},
            {"template": {"url": URL, "ref": "main", "updateInterval": "0s"}},
            {"template": {"url": URL, "ref": "~=2.0"}},  # the spec changed since the render
        ]
    }
    status = {
        "templates": [
            rec(">=1,<2", "Constraint", "v1.0.0", A).wire(),
            rec("v1.0.0", "Tag", "v1.0.0", A, source=1).wire(),
            rec("main", "Branch", None, C, source=2).wire(),
            rec("~=1.0", "Constraint", "v1.0.0", A, source=3).wire(),
        ]
    }
    [one] = followed(spec, status, minimum=60)
    assert (one.recorded.source, one.every) == (0, 300)


def test_a_new_matching_tag_moves_a_deleted_tag_and_a_failed_listing_are_problems() -> None:
    on_v1 = Followed(URL, rec(">=1,<2", "Constraint", "v1.0.0", A), 60)
    moved = decide([on_v1], {URL: listing(v1_0_0=A, v1_1_0=B, v2_0_0=C)})
    assert [m.message for m in moved.moves] == [f"template {URL} moved from v1.0.0 to v1.1.0"]
    assert not decide([on_v1], {URL: listing(v1_0_0=A, v2_0_0=C)}).moves  # nothing new in range

    gone = decide([on_v1], {URL: listing(v0_9=B)})
    assert (
        not gone.moves and "tag v1.0.0 of template" in gone.problems[0] and "was deleted" in gone.problems[0]
    )
    down = decide([on_v1], {URL: "template repository is unreachable"})
    assert not down.moves and "checking template" in down.problems[0]

    branch = Followed(URL, rec("main", "Branch", None, A), 60)
    [move] = decide([branch], {URL: listing()}).moves
    assert (move.before, move.after) == (A[:12], C[:12])
    assert read_annotation(moved.annotation()) == ([(0, "v1.1.0")], [])
    caught_up = decide(
        [Followed(URL, rec(">=1,<2", "Constraint", "v1.1.0", B), 60)], {URL: listing(v1_1_0=B)}
    )
    assert not needs_writing(caught_up, moved.annotation())  # rendered: no write, no wake-up
    assert needs_writing(caught_up, down.annotation())  # a reported problem is cleared
    assert needs_writing(moved, None) and not needs_writing(moved, moved.annotation())
    assert moved.annotation() == decide([on_v1], {URL: listing(v1_0_0=A, v1_1_0=B)}).annotation()


def test_a_failed_check_only_sets_a_condition_and_a_move_renders_once() -> None:
    status = {
        "phase": "Completed",
        "templates": [rec(">=1", "Constraint", "v1.0.0", A).wire()],
        "conditions": [],
    }
    problem = check_verdict(status, [], ["host down"])
    assert not problem.render and problem.condition is not None and problem.condition[0] is False
    status["conditions"] = [{"type": TEMPLATE_CHECKED, "status": "False", "message": problem.condition[2]}]
    assert check_verdict(status, [], ["host down"]).condition is None  # said already
    healed = check_verdict(status, [(0, "v1.1.0")], [])
    assert healed.render and healed.condition == (True, "Checked", "the last template check succeeded")
    status["templates"] = [rec(">=1", "Constraint", "v1.1.0", B).wire()]
    assert not check_verdict(status, [(0, "v1.1.0")], []).render  # already rendered


def test_a_render_that_moved_names_both_versions() -> None:
    before = [rec(">=1", "Constraint", "v1.0.0", A).wire()]
    after = [rec(">=1", "Constraint", "v1.1.0", B)]
    assert moved_events(before, after) == [f"template {URL} moved from v1.0.0 to v1.1.0"]
    assert moved_events(before, [rec(">=1", "Constraint", "v1.0.0", A)]) == []


def test_every_project_of_a_template_shares_one_listing_per_slot(server: GitHTTPServer, work: Path) -> None:
    """Counted at the server: 100 projects asking at once in one slot make one ls-remote; the next
    slot makes one more; a tag that appears is in the next slot's listing."""
    url = publish(server, work, "shared", [("v1.0.0", {"copier.yml": "{}\n"})])
    now = [1_000_000.0]
    checker = Checker(lister=list_refs, clock=lambda: now[0])
    sessions = "GET /tpl/shared.git/info/refs"
    before = sum(sessions in r for r in server.requests)
    results: list[object] = []
    threads = [
        threading.Thread(target=lambda: results.append(checker.listing(url, None, 60))) for _ in range(100)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(sessions in r for r in server.requests) - before == 1 and checker.listings == 1
    assert all(isinstance(r, refs.Refs) and set(r.tags) == {"v1.0.0"} for r in results)

    git(work / "shared", "tag", "v1.1.0")
    git(work / "shared", "push", "-q", "--tags", str(server.repo_path("tpl/shared")))
    assert set(checker.listing(url, None, 60).tags) == {"v1.0.0"}  # same slot: the shared listing
    now[0] += 60
    assert set(checker.listing(url, None, 60).tags) == {"v1.0.0", "v1.1.0"}
    assert sum(sessions in r for r in server.requests) - before == 2


def test_a_listing_that_fails_is_shared_too_and_says_why(server: GitHTTPServer) -> None:
    checker = Checker(clock=lambda: 5_000_000.0)
    url = server.url("tpl/missing")
    first = checker.listing(url, None, 60)
    assert isinstance(first, str) and "not found" in first and checker.listing(url, None, 60) == first
    assert checker.listings == 1


def test_the_check_lists_through_the_outbound_policy_as_the_clone_does(
    server: GitHTTPServer, work: Path
) -> None:
    """A namespace whose policy refuses the address gets the refusal, and the server sees nothing;
    one it allows lists through the pinned address, and the two never share a listing."""
    url = publish(server, work, "guarded", [("v1.0.0", {"copier.yml": "{}\n"})])
    allowed = outbound.Guard(
        outbound.parse_policy("templates: [{urlPrefix: 'http://'}]\ninternal: [{cidr: 127.0.0.0/8}]\n", "t"),
        "team-a",
    )
    refused = outbound.Guard(outbound.parse_policy("templates: [{urlPrefix: 'http://'}]\n", "t"), "team-b")
    checker = Checker(clock=lambda: 7_000_000.0)
    sessions = "GET /tpl/guarded.git/info/refs"
    said = checker.listing(url, refused, 60)
    assert isinstance(said, str) and "refused" in said and "rule internal" in said
    assert not any(sessions in r for r in server.requests) and checker.listings == 0
    with pytest.raises(GenerationError, match=r"check\.url: .* refused"):
        list_refs(url, refused, "check")  # the listing itself checks too, as the clone does
    assert not any(sessions in r for r in server.requests)
    found = checker.listing(url, allowed, 60)
    assert isinstance(found, refs.Refs) and set(found.tags) == {"v1.0.0"}
    assert sum(sessions in r for r in server.requests) == 1
    assert isinstance(checker.listing(url, refused, 60), str)  # not served from the allowed listing
