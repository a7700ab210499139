"""kopf's progress annotations, forgotten as soon as the object they were written for changed.

kopf keeps each handler's retry state (retries, `delayed` until when) in an annotation and skips a
sleeping handler, even when a new spec arrives meanwhile: a project waiting up to 120 s for a
template, or an export waiting for its project, could ignore the fix a user had just applied
(seen in `test_newcomer.py`: the fix waited for the old retry). Each record here remembers what it
was written for (`for`: the object's generation, plus whatever else wakes it, such as an export's
project-state annotation); a record written for something else reads as absent, so the handler
starts at once, from retry 0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import kopf

Token = Callable[[Any], str]


def generation_token(body: Any) -> str:
    return str(body.get("metadata", {}).get("generation") or "")


def annotations_token(*keys: str) -> Token:
    """The generation plus the values of these annotations."""

    def token(body: Any) -> str:
        annotations = body.get("metadata", {}).get("annotations") or {}
        return "/".join([generation_token(body), *(str(annotations.get(k, "")) for k in keys)])

    return token


class GenerationalProgressStorage(kopf.AnnotationsProgressStorage):
    """`kopf.AnnotationsProgressStorage` whose records are valid only for the token they were
    written for: the token of the first `(applies, token)` pair that applies to the body, else
    the object's generation."""

    def __init__(self, *, prefix: str, tokens: list[tuple[Callable[[Any], bool], Token]]) -> None:
        super().__init__(prefix=prefix)
        self.tokens = tokens

    def token(self, body: Any) -> str:
        for applies, token in self.tokens:
            if applies(body):
                return token(body)
        return generation_token(body)

    def fetch(self, *, key: Any, body: Any) -> Any:
        record = super().fetch(key=key, body=body)
        if record is None:
            return None
        stamped = dict(record)
        if stamped.pop("for", None) not in (None, self.token(body)):
            return None
        # Returned without the stamp, as kopf compares it with what it would store: an equal record
        # must not be patched again (an identical patch makes no watch event, and kopf waits for one).
        return stamped

    def store(self, *, key: Any, record: Any, body: Any, patch: Any) -> None:
        stamped: Any = {**record, "for": self.token(body)}  # kopf keeps unknown keys as they are
        super().store(key=key, record=stamped, body=body, patch=patch)
