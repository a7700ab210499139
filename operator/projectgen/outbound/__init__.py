"""Every outbound request a tenant chooses goes through here: template URLs and their submodules,
forge API URLs and push remotes.

Internal addresses (loopback, link-local, private, unique-local IPv6, the cluster's ranges) are
refused unless the admin's policy allows them for the namespace; the checked addresses are pinned
for the connection (git: `http.curloptResolve`; HTTP: the adapter connects to the checked address);
redirects are refused by git and re-checked like any request over HTTP; no proxy is used on any path
(a proxy would resolve the name itself). Nothing here imports `generation/` or `export/`: they call
in with a `Guard`, a policy bound to one namespace.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from projectgen.outbound.addresses import IPNetwork, Resolver, internal_reason, parse_networks
from projectgen.outbound.fetchcap import CapExceeded, watch_size
from projectgen.outbound.git import REFUSED_TRANSPORT, config_env, git_config, without_proxies
from projectgen.outbound.http import AnswerTooLarge, CheckedAdapter, bind, session, unbind
from projectgen.outbound.policy import (
    DEFAULT_ORIGIN,
    Checked,
    Guard,
    Kind,
    Limits,
    Policy,
    PolicyError,
    Refused,
    display,
    load_policy,
    parse_policy,
)

log = logging.getLogger(__name__)


@dataclass
class PolicySource:
    """The policy file (a mounted ConfigMap: the kubelet replaces it when the ConfigMap changes),
    re-read when it changes. No file: the default policy. A file that cannot be used refuses every
    URL until it is fixed (fail closed), with the reason in each error."""

    path: Path | None = None
    resolver: Resolver = field(default_factory=Resolver)
    cluster_networks: tuple[IPNetwork, ...] = ()
    limits: Limits = field(default_factory=Limits)
    origin: str = DEFAULT_ORIGIN
    _cache: tuple[tuple[float, int, int], Policy | PolicyError] | None = field(
        default=None, init=False, repr=False
    )

    def policy(self) -> Policy:
        if self.path is None:
            return Policy()
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return Policy()
        except OSError as exc:
            raise PolicyError(f"cannot read the outbound policy {self.path}: {exc.strerror}") from None
        key = (st.st_mtime, st.st_size, st.st_ino)
        if self._cache is None or self._cache[0] != key:
            try:
                found: Policy | PolicyError = load_policy(self.path)
            except PolicyError as exc:
                log.error("outbound policy unusable, refusing every URL: %s", exc)
                found = exc
            self._cache = (key, found)
        value = self._cache[1]
        if isinstance(value, PolicyError):
            raise value
        return value

    def guard(self, namespace: str, labels: Callable[[], Mapping[str, str]]) -> Guard:
        """The policy bound to `namespace`; `labels` is called only when a rule has a selector.
        An unusable policy gives a guard that refuses everything, naming the problem."""
        try:
            policy = self.policy()
        except PolicyError as exc:
            return Guard(_REFUSE_ALL, namespace, origin=f"{self.origin}, which is unusable ({exc})")
        return Guard(
            policy,
            namespace,
            labels=dict(labels()) if policy.uses_namespace_labels() else {},
            resolver=self.resolver,
            extra_cluster_networks=self.cluster_networks,
            limits=self.limits,
            origin=self.origin,
        )


_REFUSE_ALL = Policy(templates=[], forges=[])

__all__ = [
    "REFUSED_TRANSPORT",
    "AnswerTooLarge",
    "CapExceeded",
    "Checked",
    "CheckedAdapter",
    "Guard",
    "Kind",
    "Limits",
    "Policy",
    "PolicyError",
    "PolicySource",
    "Refused",
    "Resolver",
    "bind",
    "config_env",
    "display",
    "git_config",
    "internal_reason",
    "load_policy",
    "parse_networks",
    "parse_policy",
    "session",
    "unbind",
    "watch_size",
    "without_proxies",
]
