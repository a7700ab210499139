"""How many downloads the operator serves at once: per user, and in all.

Why bound them: a download holds a connection, a file descriptor and, while it reads, a thread, for
as long as the client takes (minutes for a large archive on a slow link). Without a bound, one user
with a loop holds all of them. Past the bound the answer is 429 with ``Retry-After``, as
kube-apiserver answers past its own max-in-flight; clients (``projectgen download``, client-go)
wait and try again.

Counted per user name as kube-apiserver authenticated it, from the moment the user is known until
the last byte is written (a forwarded download counts on both shards). The server is one event loop,
so the counters need no lock.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

RETRY_AFTER_SECONDS = 10
"""What 429 asks a client to wait: about the time a small download takes to free its slot."""


@dataclass
class DownloadSlots:
    total: int
    per_user: int
    _running: Counter[str] = field(default_factory=Counter)

    def acquire(self, user: str) -> str:
        """Take a slot for ``user``: '' when taken, else why not (release only what was taken)."""
        if self._running[user] >= self.per_user:
            return (
                f"too many downloads at once: {user!r} already has {self._running[user]} running "
                f"(PROJECTGEN_DOWNLOADS_PER_USER={self.per_user}); try again when one finishes"
            )
        if sum(self._running.values()) >= self.total:
            return (
                f"too many downloads at once: the operator serves {self.total} "
                "(PROJECTGEN_DOWNLOADS_MAX); try again in a moment"
            )
        self._running[user] += 1
        return ""

    def release(self, user: str) -> None:
        self._running[user] -= 1
        if self._running[user] <= 0:
            del self._running[user]

    def running(self, user: str | None = None) -> int:
        return self._running[user] if user is not None else sum(self._running.values())
