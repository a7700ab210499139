"""How a spec that the models refuse is told to a person: one line per field, the field named by its path.

The operator puts this in status and an Event; `projectgen render` prints it. Both name fields as
they are written in YAML (`spec.sources.0.inline.files.0.path`), so the message points at the line
to fix.
"""

from __future__ import annotations

from pydantic import ValidationError


def field_errors(exc: ValidationError, root: str = "spec") -> list[str]:
    """`where: what` for each error; `root` is the path of the validated object in its YAML document."""
    lines = []
    for err in exc.errors():
        if not err["loc"]:  # a rule over the whole object (a model validator) names its fields itself
            lines.append(err["msg"])
            continue
        where = ".".join(str(p) for p in (root, *err["loc"]) if p != "")
        lines.append(f"{where}: {err['msg']}")
    return lines


def validation_message(exc: ValidationError) -> str:
    """One line for status and Events: `invalid spec: spec.a: ...; spec.b: ...`."""
    return "invalid spec: " + "; ".join(field_errors(exc))
