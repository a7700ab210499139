"""What every handler shares: settings and the volume."""

from __future__ import annotations

from dataclasses import dataclass

from projectgen import outbound
from projectgen.settings import Settings
from projectgen.storage import Storage


@dataclass(frozen=True)
class Context:
    settings: Settings
    storage: Storage
    outbound: outbound.PolicySource

    @classmethod
    def from_settings(cls, settings: Settings) -> Context:
        return cls(settings=settings, storage=Storage(settings.data_dir), outbound=policy_source(settings))


def policy_source(settings: Settings) -> outbound.PolicySource:
    return outbound.PolicySource(
        path=settings.policy_file,
        resolver=outbound.Resolver(settings.hosts_file),
        cluster_networks=outbound.parse_networks(settings.cluster_cidrs, "PROJECTGEN_CLUSTER_CIDRS"),
        limits=outbound.Limits(
            template_max_bytes=settings.template_max_bytes,
            template_max_files=settings.template_max_files,
            answer_max_bytes=settings.forge_max_answer_bytes,
        ),
    )
