"""The finalizer, set by the operator's own first metadata patch instead of by kopf.

kopf adds its finalizer in a patch of its own before any handler runs (whenever a deletion
handler, a daemon or a timer matches), and only then, after the watch event of that patch, runs
the creation handler: one PATCH and one round-trip per resource. Here the deletion handlers,
the daemon and the timer match only objects that already carry the finalizer (`finalized`), so
kopf never adds it (and never removes it while it is there: a matching deletion handler requires
it); the creation handler puts it in the patch kopf sends after the handler anyway, with the
labels, the owner and the diff base (`finalize`). On deletion kopf calls the deletion handler and
removes the finalizer as before. An object deleted before that first patch has no finalizer: its
files go when its DELETED event arrives (kopf delivers it after the running handler returns).
"""

from __future__ import annotations

from typing import Any

import kopf

from projectgen.api.v1alpha1 import GROUP

FINALIZER = f"{GROUP}/finalizer"


def finalized(body: Any, **_: Any) -> bool:
    return FINALIZER in ((body.get("metadata") or {}).get("finalizers") or [])


def finalize(body: Any, patch: kopf.Patch) -> None:
    """Add the finalizer to `patch` unless the object has it (a merge patch replaces the list:
    the others are kept as they are)."""
    if finalized(body) or (body.get("metadata") or {}).get("deletionTimestamp"):
        return
    patch.metadata["finalizers"] = [*((body["metadata"].get("finalizers")) or []), FINALIZER]
