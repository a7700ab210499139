"""The update check's shared listings: one `git ls-remote` per (URL, outbound verdict) per slot.

Every project that follows a template asks here when its slot comes (`follow.slot_start`); the
first asker lists the repository, every other one in the same slot gets that listing, so 1,000
projects on one template cost one listing per interval, not 1,000. A failed listing is shared the
same way (a host that is down is asked once per slot, not once per project). The key includes the
addresses the policy checked, so a namespace whose policy verdict differs never shares a listing
it could not have made itself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from projectgen import outbound
from projectgen.generation import refs
from projectgen.generation.errors import GenerationError
from projectgen.generation.follow import Listing, slot_start
from projectgen.generation.template import list_refs

WHERE = "check"
Lister = Callable[[str, outbound.Guard | None, str], refs.Refs]


@dataclass
class Checker:
    lister: Lister = list_refs
    clock: Callable[[], float] = time.time
    listings: int = 0
    """Remote listings made (tests and benchmarks count them)."""
    on_listing: Callable[[bool], None] | None = None
    """Called after each remote listing with whether it succeeded (the operator counts them in its
    metrics; this module imports none)."""
    _cache: dict[tuple[str, tuple[str, ...]], tuple[float, Listing]] = field(default_factory=dict, repr=False)
    _locks: dict[tuple[str, tuple[str, ...]], threading.Lock] = field(default_factory=dict, repr=False)
    _guard: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def listing(self, url: str, guard: outbound.Guard | None, every: float) -> Listing:
        """The refs of `url` as listed in the current slot (listed now if nobody has), or why they
        could not be listed."""
        try:
            addresses = tuple(str(a) for a in guard.check("template", url).addresses) if guard else ()
        except outbound.Refused as exc:
            return str(exc)
        key = (url, addresses)
        slot = slot_start(self.clock(), every, url)
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            cached = self._cache.get(key)
            if cached is not None and cached[0] >= slot:
                return cached[1]
            started = self.clock()
            result: Listing
            try:
                result = self.lister(url, guard, WHERE)
            except GenerationError as exc:
                result = exc.message.removeprefix(f"{WHERE}: ")
            self._cache[key] = (started, result)
            self.listings += 1
            if self.on_listing is not None:
                self.on_listing(not isinstance(result, str))
            return result
