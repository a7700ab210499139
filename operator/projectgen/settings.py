"""Operator configuration: one class, every field from a `PROJECTGEN_*` environment variable."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

PREFIX = "PROJECTGEN_"


def _env(name: str, default: str) -> str:
    return os.environ.get(PREFIX + name, default)


@dataclass(frozen=True)
class Settings:
    data_dir: Path = field(
        default_factory=lambda: Path(_env("DATA_DIR", "/var/lib/projectgen")),
        metadata={"env": "DATA_DIR", "doc": "The volume: projects, exports and staging live here."},
    )
    status_file_cap: int = field(
        default_factory=lambda: int(_env("STATUS_FILE_CAP", "1000")),
        metadata={"env": "STATUS_FILE_CAP", "doc": "Files listed in status.files (the rest: manifest.json)."},
    )
    log_format: str = field(
        default_factory=lambda: _env("LOG_FORMAT", "json"),
        metadata={"env": "LOG_FORMAT", "doc": "json (default) or plain."},
    )
    liveness_port: int = field(
        default_factory=lambda: int(_env("LIVENESS_PORT", "8080")),
        metadata={"env": "LIVENESS_PORT", "doc": "Port of the /healthz endpoint; 0 disables it."},
    )
    namespaces: tuple[str, ...] = field(
        # `projectgen run -n a -n b` passes them space-separated; commas are accepted too.
        default_factory=lambda: tuple(n for n in re.split(r"[\s,]+", _env("NAMESPACES", "")) if n),
        metadata={
            "env": "NAMESPACES",
            "doc": "Namespaces (kopf patterns) to serve, separated by spaces or commas; empty: all.",
        },
    )
    label_selector: str = field(
        default_factory=lambda: _env("LABEL_SELECTOR", ""),
        metadata={
            "env": "LABEL_SELECTOR",
            "doc": "Serve only resources matching this label selector (sharding).",
        },
    )
    workers: int = field(
        default_factory=lambda: int(_env("WORKERS", "4")),
        metadata={"env": "WORKERS", "doc": "Generations / exports run at once (threads)."},
    )
    webhook_port: int = field(
        default_factory=lambda: int(_env("WEBHOOK_PORT", "0")),
        metadata={"env": "WEBHOOK_PORT", "doc": "Port of the admission webhook recording createdBy; 0: off."},
    )

    def __post_init__(self) -> None:
        if self.status_file_cap < 0 or self.status_file_cap > 5000:
            raise ValueError(
                f"{PREFIX}STATUS_FILE_CAP must be between 0 and 5000, not {self.status_file_cap}"
            )
        if self.log_format not in ("json", "plain"):
            raise ValueError(f"{PREFIX}LOG_FORMAT must be json or plain, not {self.log_format!r}")
        if self.workers < 1:
            raise ValueError(f"{PREFIX}WORKERS must be at least 1")

    @classmethod
    def from_env(cls) -> Settings:
        return cls()

    @classmethod
    def describe(cls) -> list[tuple[str, str]]:
        return [(PREFIX + f.metadata["env"], f.metadata["doc"]) for f in fields(cls)]
