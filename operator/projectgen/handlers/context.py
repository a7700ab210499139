"""What every handler shares: settings and the volume."""

from __future__ import annotations

from dataclasses import dataclass

from projectgen.settings import Settings
from projectgen.storage import Storage


@dataclass(frozen=True)
class Context:
    settings: Settings
    storage: Storage

    @classmethod
    def from_settings(cls, settings: Settings) -> Context:
        return cls(settings=settings, storage=Storage(settings.data_dir))
