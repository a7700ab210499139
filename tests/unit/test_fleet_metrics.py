"""The fleet's day-two series (projectgen.fleet, metrics.FleetCollector): what a scrape says about
template versions, update requests and the volume, from resources as the watches report them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from projectgen import fleet, metrics
from projectgen.fleet import Fleet, clean_url
from projectgen.generation.checker import Checker
from projectgen.generation.errors import GenerationError
from projectgen.generation.refs import Refs
from projectgen.handlers.repositoryexport import request_times

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(collector: metrics.FleetCollector) -> Samples:
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def of(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


def project(url: str, tag: str | None, commit: str = "a" * 40, size: int = 10) -> dict[str, Any]:
    rec: dict[str, Any] = {"source": 0, "url": url, "kind": "Tag", "commit": commit}
    if tag:
        rec["tag"] = tag
    return {"status": {"templates": [rec], "totalSize": size}}


def export(
    state: str | None, *, conflicts: bool = False, opened: str | None = None, since: str | None = None
) -> dict[str, Any]:
    request: dict[str, Any] = {"number": 1, "state": state, "conflictedFiles": ["a.txt"] if conflicts else []}
    if opened:
        request["openedAt"] = opened
    if since:
        request["conflictedSince"] = since
    return {"status": {"pullRequest": request}}


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[metrics.FleetCollector]:
    c = metrics.FleetCollector(Fleet())
    c.clock = lambda: 1_000_000.0
    yield c


@pytest.mark.parametrize(
    ("url", "clean"),
    [
        (
            "https://user:s3cret@git.example.com/t/svc.git?private_token=x#frag",
            "https://git.example.com/t/svc.git",
        ),
        ("https://oauth2:tok@git.example.com:8443/t/svc", "https://git.example.com:8443/t/svc"),
        ("https://git.example.com/t/svc", "https://git.example.com/t/svc"),
        ("http://[::1]:3000/t/svc?x=1", "http://[::1]:3000/t/svc"),
    ],
)
def test_template_urls_lose_credentials_query_and_fragment(url: str, clean: str) -> None:
    assert clean_url(url) == clean


def test_projects_per_template_version_follow_the_watches(collector: metrics.FleetCollector) -> None:
    f = collector.fleet
    url = "https://user:tok@git.example.com/t/svc.git?ref=x"
    f.saw_project("a", "p1", project(url, "v1.0.0"))
    f.saw_project("b", "p2", project(url, "v1.0.0"))
    f.saw_project("b", "p3", project(url, None, commit="0123456789abcdef" * 2 + "01234567"))
    f.saw_project("b", "inline", {"status": {"totalSize": 5}})
    series = of(scrape(collector), "projectgen_template_projects")
    clean = "https://git.example.com/t/svc.git"
    assert series == {
        (("template_url", clean), ("version", "v1.0.0")): 2,
        (("template_url", clean), ("version", "0123456789ab")): 1,
    }
    assert "tok" not in generate_latest_text(collector)
    f.saw_project("a", "p1", project(url, "v1.2.0"))  # moved
    f.saw_project("b", "p2", None)  # deleted
    series = of(scrape(collector), "projectgen_template_projects")
    assert series == {
        (("template_url", clean), ("version", "v1.2.0")): 1,
        (("template_url", clean), ("version", "0123456789ab")): 1,
    }


def generate_latest_text(collector: metrics.FleetCollector) -> str:
    registry = CollectorRegistry()
    registry.register(collector)
    return generate_latest(registry).decode()


def test_template_series_are_capped_with_the_rest_summed_as_other(collector: metrics.FleetCollector) -> None:
    f = collector.fleet
    n = fleet.TEMPLATE_SERIES + 50
    for i in range(n):  # template i has i+1 projects... but only one each here, plus a big one
        f.saw_project("ns", f"p{i}", project(f"https://git.example.com/t/{i:04d}", "v1"))
    for j in range(5):
        f.saw_project("ns", f"big{j}", project("https://git.example.com/t/popular", "v9"))
    series = of(scrape(collector), "projectgen_template_projects")
    assert len(series) == fleet.TEMPLATE_SERIES
    assert series[(("template_url", "https://git.example.com/t/popular"), ("version", "v9"))] == 5
    other = series[(("template_url", "other"), ("version", "other"))]
    assert other == n - (fleet.TEMPLATE_SERIES - 2)  # every project is counted once
    assert sum(series.values()) == n + 5


def test_update_requests_by_state_and_the_oldest_open_and_conflicted(
    collector: metrics.FleetCollector,
) -> None:
    f = collector.fleet
    samples = scrape(collector)
    assert of(samples, "projectgen_update_requests") == {(("state", s),): 0 for s in fleet.STATES}
    assert of(samples, "projectgen_update_request_oldest_open_age_seconds") == {}
    # 1_000_000 s after the epoch is 1970-01-12T13:46:40Z
    f.saw_export("a", "e1", export("open", opened="1970-01-12T13:00:00Z"))
    f.saw_export(
        "a", "e2", export("open", conflicts=True, opened="1970-01-12T10:00:00Z", since="1970-01-12T12:00:00Z")
    )
    f.saw_export(
        "b", "e3", export("open", conflicts=True, opened="1970-01-12T11:00:00Z", since="1970-01-12T11:30:00Z")
    )
    f.saw_export("b", "e4", export("merged", opened="1970-01-01T00:00:00Z"))
    f.saw_export("b", "e5", export("closed"))
    f.saw_export("b", "archive", {"status": {"phase": "Completed"}})
    samples = scrape(collector)
    assert of(samples, "projectgen_update_requests") == {
        (("state", "open"),): 1,
        (("state", "conflicted"),): 2,
        (("state", "merged"),): 1,
        (("state", "closed"),): 1,
    }
    assert of(samples, "projectgen_update_request_oldest_open_age_seconds") == {
        (("name", "e2"), ("namespace", "a")): 1_000_000 - (11 * 86400 + 10 * 3600)
    }
    assert of(samples, "projectgen_update_request_oldest_conflicted_age_seconds") == {
        (("name", "e3"), ("namespace", "b")): 1_000_000 - (11 * 86400 + 11 * 3600 + 1800)
    }
    f.saw_export("b", "e3", None)
    f.saw_export("a", "e2", export("merged", opened="1970-01-12T10:00:00Z"))
    samples = scrape(collector)
    assert of(samples, "projectgen_update_request_oldest_conflicted_age_seconds") == {}
    assert of(samples, "projectgen_update_requests")[(("state", "merged"),)] == 2


def test_largest_projects_are_the_top_k(collector: metrics.FleetCollector) -> None:
    for i in range(fleet.LARGEST + 5):
        collector.fleet.saw_project("ns", f"p{i:02d}", {"status": {"totalSize": i * 100}})
    collector.fleet.saw_project("ns", "failed", {"status": {"phase": "Failed"}})  # no files: not listed
    series = of(scrape(collector), "projectgen_project_size_bytes")
    assert len(series) == fleet.LARGEST
    assert min(series.values()) == 5 * 100 and max(series.values()) == (fleet.LARGEST + 4) * 100


def test_volume_bytes_come_from_the_data_directorys_file_system(
    collector: metrics.FleetCollector, tmp_path: Path
) -> None:
    assert of(scrape(collector), "projectgen_volume_free_bytes") == {}  # no data dir: no series
    collector.data_dir = tmp_path
    samples = scrape(collector)
    st = os.statvfs(tmp_path)
    free = of(samples, "projectgen_volume_free_bytes")[()]
    used = of(samples, "projectgen_volume_used_bytes")[()]
    assert abs(free - st.f_bavail * st.f_frsize) < 64 * 1024 * 1024  # others write meanwhile
    assert abs(used + free - (st.f_blocks - st.f_bfree + st.f_bavail) * st.f_frsize) < 64 * 1024 * 1024
    assert used > 0 and free > 0


def test_render_failures_publish_failures_and_listings_are_counted() -> None:
    def sample(name: str, **labels: str) -> float:
        return metrics.REGISTRY.get_sample_value(name, labels) or 0.0

    before = sample("projectgen_render_failures_total", reason="sandbox_killed")
    metrics.render_failed(metrics.RenderFailure.SANDBOX_KILLED)
    assert sample("projectgen_render_failures_total", reason="sandbox_killed") == before + 1
    before = sample("projectgen_publish_failures_total", forge="gitea", retryable="false")
    metrics.publish_failed("gitea", retryable=False)
    assert sample("projectgen_publish_failures_total", forge="gitea", retryable="false") == before + 1
    listings, failures = (
        sample("projectgen_template_listings_total"),
        sample("projectgen_template_listing_failures_total"),
    )
    metrics.template_listed(True)
    metrics.template_listed(False)
    assert sample("projectgen_template_listings_total") == listings + 2
    assert sample("projectgen_template_listing_failures_total") == failures + 1
    metrics.serving_certificate(1_900_000_000.0)
    assert sample("projectgen_serving_certificate_expiration_timestamp_seconds") == 1_900_000_000.0


def test_the_checker_reports_each_listing_and_whether_it_failed() -> None:
    seen: list[bool] = []

    def lister(url: str, guard: object, where: str) -> Any:
        if "down" in url:
            raise GenerationError(f"{where}: host down")
        return Refs()

    checker = Checker(lister=lister, on_listing=seen.append)
    checker.listing("https://git.example.com/t/up", None, 60)
    checker.listing("https://git.example.com/t/up", None, 60)  # shared within the slot: no listing
    checker.listing("https://git.example.com/t/down", None, 60)
    assert seen == [True, False]


def test_request_times_keep_when_it_opened_and_since_when_it_conflicts() -> None:
    first = request_times({}, 7, is_open=True, conflicted=False)
    assert first["openedAt"] and first["conflictedSince"] is None
    known = {"number": 7, "state": "open", "openedAt": "2026-01-01T00:00:00Z"}
    later = request_times(known, 7, is_open=True, conflicted=True)
    assert later["openedAt"] == "2026-01-01T00:00:00Z" and later["conflictedSince"]
    known |= {"conflictedSince": "2026-01-02T00:00:00Z"}
    assert request_times(known, 7, is_open=True, conflicted=True)["conflictedSince"] == "2026-01-02T00:00:00Z"
    assert request_times(known, 7, is_open=True, conflicted=False)["conflictedSince"] is None
    other = request_times(known, 8, is_open=True, conflicted=True)  # a new request: counts anew
    assert other["openedAt"] != "2026-01-01T00:00:00Z" and other["conflictedSince"] != "2026-01-02T00:00:00Z"
