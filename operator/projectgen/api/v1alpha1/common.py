"""Types shared by both kinds: references, conditions, validated strings.

Every constraint here is written twice on purpose: as a pydantic check (so the
offline `projectgen render` and the operator refuse bad input) and as schema /
CEL (so the API server refuses it at `kubectl apply`). Tests run one corpus
through both.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

GROUP = "projectgen.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

MAX_PATH = 1024
MAX_NAME = 253
MAX_MESSAGE = 32768
SHA256_PATTERN = r"^[a-f0-9]{64}$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
CONFIGMAP_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"

CREATED_BY_ANNOTATION = f"{GROUP}/created-by"
"""Stamped with the requesting user on create of either kind by admission (policy or webhook; see
manifests/created-by/), copied by the operator to status.createdBy."""

# One source for the path rules: the CEL text and the Python check below must agree.
_BAD_SEGMENT = re.compile(r"(^|/)\.{1,2}(/|$)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DRIVE = re.compile(r"[A-Za-z]:")
# CEL cost grows with maxLength x the maxItems of every enclosing list; the API server refuses a
# CRD whose estimate is over budget (per rule): so two regexes, each as short as it can be.
PATH_RULES: list[dict[str, str]] = [
    {"rule": "!self.startsWith('/')", "message": "must be a relative path (no leading '/')"},
    {
        "rule": r"!self.matches('(^|/)[.]{1,2}(/|$)|//|/$|\\\\')",
        "message": "must be '/'-separated segments, none empty, '.' or '..' (no traversal), "
        "without '\\' (use '/' as separator)",
    },
    {
        "rule": r"!self.matches('[\\x00-\\x1f\\x7f]|^[A-Za-z]:')",
        "message": "must not contain control characters (newline, tab, NUL...) "
        "nor start with a drive letter ('C:')",
    },
]


def check_relative_path(value: str) -> str:
    """Refuse any path that could leave the tree or mean two things on two systems."""
    if not value:
        raise ValueError("path must not be empty")
    if _CONTROL.search(value):
        raise ValueError(f"path {value!r} must not contain control characters (newline, tab, NUL...)")
    if value.startswith("/"):
        raise ValueError(f"path {value!r} must be a relative path (no leading '/')")
    if "\\" in value:
        raise ValueError(f"path {value!r} must use '/' as separator, not '\\'")
    if _DRIVE.match(value):
        raise ValueError(f"path {value!r} must not start with a drive letter ({value[:2]!r})")
    if _BAD_SEGMENT.search(value):
        raise ValueError(f"path {value!r} must not contain '.' or '..' path segments")
    if "//" in value or value.endswith("/"):
        raise ValueError(f"path {value!r} must not contain empty path segments")
    if len(value.encode("utf-8", "surrogatepass")) > MAX_PATH:
        raise ValueError(f"path {value[:64]!r}... is longer than {MAX_PATH} bytes")
    return value


RelativePath = Annotated[
    str,
    Field(min_length=1, max_length=MAX_PATH, json_schema_extra={"x-kubernetes-validations": PATH_RULES}),
    AfterValidator(check_relative_path),
]

ObjectName = Annotated[str, Field(min_length=1, max_length=MAX_NAME, pattern=DNS_SUBDOMAIN_PATTERN)]
Sha256 = Annotated[str, Field(pattern=SHA256_PATTERN, min_length=64, max_length=64)]
Message = Annotated[str, Field(max_length=MAX_MESSAGE)]
HANDLED_FIELD = "lastHandledConfiguration"
HandledConfiguration = Annotated[
    str,
    Field(
        max_length=128 * 1024,
        description="The operator's own record of the spec it last handled (its diff base: the spec as "
        "JSON, or SHA-256 digests of it when large). Kept in status so that it is written with the "
        "status the operator writes anyway; not for users.",
    ),
]
CreatedBy = Annotated[
    str,
    Field(max_length=MAX_PATH, description="The user who created the resource (see manifests/created-by/)."),
]


class Model(BaseModel):
    """Base for every API type: camelCase on the wire, snake_case in Python."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid", use_enum_values=True)

    def wire(self) -> dict[str, Any]:
        """The object as the API server stores it (camelCase, unset fields left out)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class LocalObjectReference(Model):
    """A reference to an object in the same namespace."""

    name: ObjectName = Field(description="Name of the object, in the same namespace.")


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(Model):
    """A kstatus condition (Ready, Reconciling, Stalled)."""

    type: str = Field(max_length=316, description="Type of the condition: Ready, Reconciling or Stalled.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str | None = Field(
        default=None, max_length=1024, description="One CamelCase word saying why the condition is as it is."
    )
    message: Message | None = Field(default=None, description="What happened, for a person to read.")
    last_transition_time: datetime | None = Field(
        default=None,
        alias="lastTransitionTime",
        description="When the status of this condition last changed.",
    )
    observed_generation: int | None = Field(
        default=None,
        ge=0,
        alias="observedGeneration",
        description="The metadata.generation the condition was computed for.",
    )


Conditions = Annotated[
    list[Condition],
    Field(
        max_length=8,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    ),
]
