"""The Kubernetes versions projectgen supports, and the check the operator makes at start.

Supported: the three newest minors, each tested (``make test`` runs the version matrix of
``projectgen_dev.controlplane.KUBE_VERSIONS``). An older API server is refused at start, with a log
line naming its version: the CRDs and the created-by install rely on what those minors serve, and
admission cannot see the server's version, so an apply on an old cluster could not say why it
half-works. A newer one runs, with a warning that it is untested.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

OLDEST_MINOR = 35
NEWEST_TESTED_MINOR = 37
MUTATING_ADMISSION_POLICY_MINOR = 36
"""MutatingAdmissionPolicy is GA (admissionregistration.k8s.io/v1, on by default) from 1.36; in 1.35
it is beta (v1beta1), off unless its feature gate and API version are switched on."""

_VERSION = re.compile(r"^v?(\d+)\.(\d+)")


class UnsupportedKubernetes(Exception):
    """The API server is older than the oldest supported minor."""


@dataclass(frozen=True)
class KubeVersion:
    major: int
    minor: int
    text: str

    @classmethod
    def parse(cls, git_version: str) -> KubeVersion:
        """``v1.35.4``, ``v1.36.3-gke.100``, ``1.37`` … (the ``gitVersion`` of ``/version``)."""
        found = _VERSION.match(git_version.strip())
        if found is None:
            raise ValueError(f"not a Kubernetes version: {git_version!r}")
        return cls(int(found.group(1)), int(found.group(2)), git_version.strip())

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> KubeVersion:
        """The version whose APIs the server serves, from its `/version` document: the emulation
        version when it has one (a 1.37 server run with ``--emulated-version=1.35`` serves 1.35's
        APIs), else ``gitVersion``."""
        git_version = str(info.get("gitVersion") or "")
        major, minor = info.get("emulationMajor"), info.get("emulationMinor")
        if major and minor:
            emulated = cls.parse(f"{major}.{minor}")
            if git_version and emulated.key != cls.parse(git_version).key:
                return cls(emulated.major, emulated.minor, f"{major}.{minor} (emulated by {git_version})")
        return cls.parse(git_version)

    @property
    def key(self) -> tuple[int, int]:
        return (self.major, self.minor)

    @property
    def serves_mutating_admission_policy(self) -> bool:
        return self.key >= (1, MUTATING_ADMISSION_POLICY_MINOR)


def supported_range() -> str:
    return f"1.{OLDEST_MINOR} to 1.{NEWEST_TESTED_MINOR}"


def check(version: KubeVersion) -> str | None:
    """Raise :class:`UnsupportedKubernetes` below the range; return a warning above it, else None."""
    if version.key < (1, OLDEST_MINOR):
        raise UnsupportedKubernetes(
            f"Kubernetes {version.text} is not supported: projectgen needs 1.{OLDEST_MINOR} or newer "
            f"(tested on {supported_range()}); upgrade the cluster or use an older projectgen"
        )
    if version.key > (1, NEWEST_TESTED_MINOR):
        return (
            f"Kubernetes {version.text} is newer than the versions projectgen is tested on "
            f"({supported_range()}); running anyway"
        )
    return None
