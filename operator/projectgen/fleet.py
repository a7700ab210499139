"""The day-two picture of the fleet, for the metrics: which template versions the projects run,
the update requests by state and how old they are, and the largest projects.

Fed by the operator's watch events (`handlers/`: every GeneratedProject and RepositoryExport it
serves, as the API server last reported it) and read at each scrape, so a scrape costs no API call
and no walk of the volume. Pure: no kopf, no prometheus_client (`metrics.py` turns it into series).

Cardinality is bounded by construction: at most `TEMPLATE_SERIES` (template URL, version) pairs,
the pairs with the most projects first and the rest summed under `OTHER`; `LARGEST` projects by
size; one series per request state; one oldest request per age.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

TEMPLATE_SERIES = 100
"""Most (template URL, version) series exposed; the pairs past it are summed under OTHER."""
LARGEST = 10
"""Projects listed by size (the top K)."""
OTHER = "other"
STATES = ("open", "conflicted", "merged", "closed")
"""The states of an update request: `conflicted` is an open request with files a person must resolve."""

Key = tuple[str, str]


def clean_url(url: str) -> str:
    """The URL without credentials, query or fragment: what a metric label may show."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return OTHER
    if not parts.scheme or not parts.netloc:
        return url.split("?", 1)[0].split("#", 1)[0]
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{host}:{port}" if port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _timestamp(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass(frozen=True)
class ProjectFacts:
    templates: frozenset[Key]
    """(clean URL, version): the tag rendered, else the commit's first 12 characters."""
    size: int


@dataclass(frozen=True)
class RequestFacts:
    state: str
    opened_at: float | None
    conflicted_since: float | None


def project_facts(body: Mapping[str, Any]) -> ProjectFacts:
    status = body.get("status") or {}
    templates = set()
    for rec in status.get("templates") or []:
        if not isinstance(rec, Mapping) or not isinstance(rec.get("url"), str):
            continue
        version = rec.get("tag") or str(rec.get("commit") or "")[:12] or "unknown"
        templates.add((clean_url(rec["url"]), str(version)))
    size = status.get("totalSize")
    return ProjectFacts(frozenset(templates), size if isinstance(size, int) and size >= 0 else 0)


def request_facts(body: Mapping[str, Any]) -> RequestFacts | None:
    request = (body.get("status") or {}).get("pullRequest") or {}
    state = request.get("state")
    if state not in ("open", "merged", "closed"):
        return None
    if state == "open" and request.get("conflictedFiles"):
        state = "conflicted"
    return RequestFacts(
        state, _timestamp(request.get("openedAt")), _timestamp(request.get("conflictedSince"))
    )


@dataclass(frozen=True)
class Oldest:
    namespace: str
    name: str
    since: float


class Fleet:
    """What the operator last saw of each resource it serves; thread-safe (kopf's event loop
    writes, the metrics thread reads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._projects: dict[Key, ProjectFacts] = {}
        self._requests: dict[Key, RequestFacts] = {}

    def saw_project(self, namespace: str, name: str, body: Mapping[str, Any] | None) -> None:
        """`body` None: the project is gone."""
        with self._lock:
            if body is None:
                self._projects.pop((namespace, name), None)
            else:
                self._projects[(namespace, name)] = project_facts(body)

    def saw_export(self, namespace: str, name: str, body: Mapping[str, Any] | None) -> None:
        facts = request_facts(body) if body is not None else None
        with self._lock:
            if facts is None:
                self._requests.pop((namespace, name), None)
            else:
                self._requests[(namespace, name)] = facts

    def clear(self) -> None:
        with self._lock:
            self._projects.clear()
            self._requests.clear()

    def templates(self, cap: int = TEMPLATE_SERIES) -> list[tuple[Key, int]]:
        """Projects per (template URL, version): the `cap - 1` largest pairs, then (OTHER, OTHER)
        for the rest when there are more than `cap`."""
        with self._lock:
            counts = Counter(t for facts in self._projects.values() for t in facts.templates)
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        if len(ranked) <= cap:
            return ranked
        kept = ranked[: cap - 1]
        return [*kept, ((OTHER, OTHER), sum(n for _key, n in ranked[cap - 1 :]))]

    def requests(self) -> dict[str, int]:
        with self._lock:
            counts = Counter(r.state for r in self._requests.values())
        return {state: counts.get(state, 0) for state in STATES}

    def oldest(self, *, conflicted: bool) -> Oldest | None:
        """The open request opened longest ago, or the one conflicted longest (`conflicted`)."""
        found: Oldest | None = None
        with self._lock:
            for (namespace, name), r in self._requests.items():
                since = r.conflicted_since if conflicted else r.opened_at
                if r.state not in ("open", "conflicted") or since is None:
                    continue
                if found is None or (since, namespace, name) < (found.since, found.namespace, found.name):
                    found = Oldest(namespace, name, since)
        return found

    def largest(self, k: int = LARGEST) -> list[tuple[Key, int]]:
        with self._lock:
            sizes = [(key, facts.size) for key, facts in self._projects.items() if facts.size > 0]
        return sorted(sizes, key=lambda item: (-item[1], item[0]))[:k]
