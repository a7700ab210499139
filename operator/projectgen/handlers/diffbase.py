"""kopf's "last handled configuration", kept small, in status.

kopf stores the essence of an object (its spec, labels and annotations) as JSON and diffs the
next version against it. A GeneratedProject's spec may be large (inline files up to 1.5 MiB): in
an annotation (256 KiB for all of them) kopf's patch was refused (422 "metadata.annotations: Too
long"), the object rendered again and again, and its finalizer could never be removed; in status
a second copy of the spec would take the object over the API server's size limit. Here an essence
over `limit` bytes is stored as one SHA-256 per top-level field instead, which is all the
handlers need to know: whether `spec` (or the metadata) changed, not how.

The essence is also narrower than kopf's: the spec and only the annotations named in `keep`
(the export's wake-up annotation), not labels or other annotations. A label the operator sets
(the project and owner labels) or one a user adds never makes kopf wake the object, diff it and
patch a new diff base: each of those was a full round-trip and a PATCH per resource.

It is kept in `status.lastHandledConfiguration`, not in an annotation: kopf writes it after the
handler, in the same status PATCH as the handler's last transition (`StatusWriter.last`), where an
annotation cost a metadata PATCH of its own on every change. Objects handled by an older version
carry it in the `projectgen.io/last-handled-configuration` annotation: it is read from there until
status has one, and never written there again, so a restart over them still writes nothing.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import kopf

from projectgen.api.v1alpha1.common import HANDLED_FIELD

DIGESTS = "sha256:"
"""Prefix of an annotation value that holds digests instead of the essence itself."""
PLACEHOLDER = "projectgen.io/sha256"


def _digest(value: Any) -> str:
    encoded = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(encoded.encode("utf-8", "surrogatepass")).hexdigest()


class CompactDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's diff base in status (read from kopf's annotation too), with digests for an essence
    over `limit` bytes.

    `progress` is the operator's progress storage: kopf clears its keys from the essence
    before diffing, so the current essence is rebuilt here the same way to compare digests.
    """

    def __init__(
        self, *, prefix: str, key: str, progress: Any, limit: int = 64 * 1024, keep: tuple[str, ...] = ()
    ) -> None:
        super().__init__(prefix=prefix, key=key)
        self.progress = progress
        self.limit = limit
        self.keep = keep

    def _narrow(self, essence: Any) -> Any:
        """Only the spec and the kept annotations (also of a diff base stored by an older version)."""
        essence = dict(essence)
        meta = dict(essence.pop("metadata", None) or {})
        annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k in self.keep}
        if annotations:
            essence["metadata"] = {"annotations": annotations}
        return essence

    def build(self, *, body: Any, extra_fields: Any = None) -> Any:
        return self._narrow(super().build(body=body, extra_fields=extra_fields))

    def store(self, *, body: Any, patch: Any, essence: Any) -> None:
        encoded = json.dumps(essence, separators=(",", ":"))
        if len(encoded) > self.limit:
            encoded = DIGESTS + json.dumps({k: _digest(v) for k, v in essence.items()}, sort_keys=True)
        patch.status[HANDLED_FIELD] = encoded

    def _stored(self, body: Any) -> str | None:
        """Status first; else the annotation an older version wrote."""
        encoded = (body.get("status") or {}).get(HANDLED_FIELD)
        if encoded is not None:
            return str(encoded)
        for full_key in self.make_keys(self.key, body=body):
            legacy = body.metadata.annotations.get(full_key, None)
            if legacy is not None:
                return str(legacy)
        return None

    def fetch(self, *, body: Any) -> Any:
        encoded = self._stored(body)
        if encoded is None:
            return None
        if not encoded.startswith(DIGESTS):
            return self._narrow(json.loads(encoded))
        digests: dict[str, str] = json.loads(encoded[len(DIGESTS) :])
        current = self.progress.clear(essence=self.build(body=body))
        # Unchanged fields as they are now (no diff); changed ones as a stand-in that differs.
        return {
            field: current[field]
            if field in current and _digest(current[field]) == digest
            else {PLACEHOLDER: digest}
            for field, digest in digests.items()
        }
