"""What this process has already finished, per object: a guard against handling a stale event twice.

kopf diffs each event against the diff base it wrote after the last handler. Our own status writes
during a handler (Generating, Exporting) reach the watch before kopf's patch of the diff base; kopf
waits for its patch to come back (`consistency_timeout`), but when the watch lags longer than that
(seen at 200 projects on a loaded machine: 80 s) it handles the stale event, which has no diff
base yet, as a creation again: a second render of the same generation, a second archive, a second
push. Here each handler records what it finished (the object's uid, generation and what it
produced); a creation or update that finds the same generation finished, and its files still
there, does nothing. Only this process's memory: after a restart, status decides (settled.py).
"""

from __future__ import annotations

from pathlib import Path

_finished: dict[str, tuple[int, str]] = {}


def finish(uid: str, generation: int, output: str) -> None:
    """`uid` finished `generation`; `output` is what it produced (a tree's directory, an archive,
    or an exported content hash)."""
    _finished[uid] = (generation, output)


def finished(uid: str, generation: int, output: str | None = None) -> bool:
    """This process finished `generation` of `uid` (with this `output`, when given), and the file
    or directory it names, if it is one, is still there."""
    done = _finished.get(uid)
    if done is None or done[0] != generation or (output is not None and done[1] != output):
        return False
    return not done[1].startswith("/") or Path(done[1]).exists()


def forget(uid: str) -> None:
    _finished.pop(uid, None)
