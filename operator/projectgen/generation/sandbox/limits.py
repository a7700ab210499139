"""The limits of one template render: operator settings, which a resource may only lower."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from projectgen.settings import Settings

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    cpu_seconds: int = 60
    wall_seconds: float = 120.0
    memory_bytes: int = 1024 * MIB
    file_size_bytes: int = 256 * MIB
    output_bytes: int = 1024 * MIB
    output_files: int = 50_000
    open_files: int = 256
    processes: int = 512

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            cpu_seconds=settings.sandbox_cpu_seconds,
            wall_seconds=float(settings.sandbox_wall_seconds),
            memory_bytes=settings.sandbox_memory_mib * MIB,
            file_size_bytes=settings.sandbox_file_size_mib * MIB,
            output_bytes=settings.sandbox_output_mib * MIB,
            output_files=settings.sandbox_output_files,
            open_files=settings.sandbox_open_files,
            processes=settings.sandbox_processes,
        )

    def lowered(self, **asked: Any) -> Limits:
        """These limits, with each value a resource asked for taken only where it is lower."""
        changes = {k: min(getattr(self, k), v) for k, v in asked.items() if v is not None}
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Limits:
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})
