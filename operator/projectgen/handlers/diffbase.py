"""kopf's "last handled configuration", kept small enough for an annotation.

kopf stores the essence of an object (its spec, labels and annotations) as JSON in an
annotation and diffs the next version against it. The API server allows 256 KiB for all
annotations of an object together, and a GeneratedProject's spec may be far larger (inline
files up to 1.5 MiB): kopf's patch is then refused (422 "metadata.annotations: Too long"), the
object is rendered again and again, and its finalizer can never be removed. Here an essence
over `limit` bytes is stored as one SHA-256 per top-level field instead, which is all the
handlers need to know: whether `spec` (or the metadata) changed, not how.

The essence is also narrower than kopf's: the spec and only the annotations named in `keep`
(the export's wake-up annotation), not labels or other annotations. A label the operator sets
(the project and owner labels) or one a user adds never makes kopf wake the object, diff it and
patch a new diff base: each of those was a full round-trip and a PATCH per resource.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import kopf

DIGESTS = "sha256:"
"""Prefix of an annotation value that holds digests instead of the essence itself."""
PLACEHOLDER = "projectgen.io/sha256"


def _digest(value: Any) -> str:
    encoded = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(encoded.encode("utf-8", "surrogatepass")).hexdigest()


class CompactDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """`kopf.AnnotationsDiffBaseStorage`, with digests for an essence over `limit` bytes.

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
        if len(json.dumps(essence, separators=(",", ":"))) <= self.limit:
            super().store(body=body, patch=patch, essence=essence)
            return
        value = DIGESTS + json.dumps({k: _digest(v) for k, v in essence.items()}, sort_keys=True)
        for full_key in self.make_keys(self.key, body=body):
            patch.metadata.annotations[full_key] = value
        self._store_marker(prefix=self.prefix, patch=patch, body=body)

    def fetch(self, *, body: Any) -> Any:
        for full_key in self.make_keys(self.key, body=body):
            encoded = body.metadata.annotations.get(full_key, None)
            if encoded is None:
                continue
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
        return None
