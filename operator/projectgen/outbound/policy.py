"""The admin's outbound policy: which URLs a namespace may make the operator fetch or call.

The policy is a YAML document (the key `policy.yaml` of the ConfigMap `projectgen-policy` in the
operator's namespace, mounted as a file; `projectgen render --policy FILE` reads the same format):

    templates:            # template URL prefixes (default: https://)
      - urlPrefix: https://
    forges:               # forge apiUrl and push remote prefixes (default: https://)
      - urlPrefix: https://
    internal:             # internal addresses explicitly allowed (default: none)
      - host: gitlab.internal.example        # or cidr: <network>
        namespaceSelector: {matchLabels: {team: platform}}
    clusterNetworks: []   # the cluster's service and pod ranges, refused like private ranges

A URL passes when (1) a rule of its kind has a prefix it starts with and a namespaceSelector the
namespace matches, and (2) every address its host resolves to is public, or is allowed by an
`internal` entry (by host name or by network) for that namespace. A rule without a selector applies
to every namespace. Errors name the rule that refused and what an admin can change; they never hold
anything a server answered.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import SplitResult, urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from projectgen.outbound.addresses import (
    IPAddress,
    IPNetwork,
    ResolutionError,
    Resolver,
    internal_reason,
    parse_networks,
)

Kind = Literal["template", "forge"]
RULES: dict[Kind, str] = {"template": "templates", "forge": "forges"}
DEFAULT_ORIGIN = "the operator's outbound policy (ConfigMap projectgen-policy, key policy.yaml)"


class Refused(Exception):
    """A URL the policy does not allow. Permanent until an admin changes the policy."""

    def __init__(self, message: str, rule: str) -> None:
        super().__init__(message)
        self.message = message
        self.rule = rule

    def __str__(self) -> str:
        return self.message


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class Requirement(_Model):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = Field(default_factory=list)


class NamespaceSelector(_Model):
    """A Kubernetes label selector over the namespace's labels."""

    match_labels: dict[str, str] = Field(default_factory=dict, alias="matchLabels")
    match_expressions: list[Requirement] = Field(default_factory=list, alias="matchExpressions")

    def matches(self, labels: Mapping[str, str]) -> bool:
        if any(labels.get(k) != v for k, v in self.match_labels.items()):
            return False
        for req in self.match_expressions:
            present = req.key in labels
            if req.operator == "Exists" and not present:
                return False
            if req.operator == "DoesNotExist" and present:
                return False
            if req.operator == "In" and (not present or labels[req.key] not in req.values):
                return False
            if req.operator == "NotIn" and present and labels[req.key] in req.values:
                return False
        return True


class UrlRule(_Model):
    url_prefix: str = Field(alias="urlPrefix", min_length=1)
    namespace_selector: NamespaceSelector | None = Field(default=None, alias="namespaceSelector")

    @field_validator("url_prefix")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if not value.lower().startswith(("http://", "https://")):
            raise ValueError("urlPrefix must start with https:// or http://")
        return value


class InternalRule(_Model):
    host: str | None = None
    cidr: str | None = None
    namespace_selector: NamespaceSelector | None = Field(default=None, alias="namespaceSelector")

    @model_validator(mode="after")
    def _one(self) -> InternalRule:
        if (self.host is None) == (self.cidr is None):
            raise ValueError("set exactly one of host and cidr")
        if self.cidr is not None:
            parse_networks([self.cidr], "cidr")
        return self

    def network(self) -> IPNetwork | None:
        return ipaddress.ip_network(self.cidr, strict=False) if self.cidr is not None else None


def _https() -> list[UrlRule]:
    return [UrlRule.model_validate({"urlPrefix": "https://"})]


class Policy(_Model):
    templates: list[UrlRule] = Field(default_factory=_https)
    forges: list[UrlRule] = Field(default_factory=_https)
    internal: list[InternalRule] = Field(default_factory=list)
    cluster_networks: list[str] = Field(default_factory=list, alias="clusterNetworks")

    @field_validator("cluster_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        parse_networks(value, "clusterNetworks")
        return value

    def uses_namespace_labels(self) -> bool:
        rules: Sequence[UrlRule | InternalRule] = [*self.templates, *self.forges, *self.internal]
        return any(r.namespace_selector is not None for r in rules)


class PolicyError(ValueError):
    """The policy file cannot be used."""


def parse_policy(text: str, where: str) -> Policy:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(f"{where} is not valid YAML: {' '.join(str(exc).split())}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PolicyError(f"{where} must be a mapping (templates, forges, internal, clusterNetworks)")
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(policy)'}: {e['msg']}" for e in exc.errors()
        )
        raise PolicyError(f"{where} is invalid: {problems}") from None


def load_policy(path: Path) -> Policy:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"cannot read the outbound policy {path}: {exc.strerror}") from None
    return parse_policy(text, str(path))


@dataclass(frozen=True)
class Limits:
    """Caps on what one fetch may bring in (settings, not policy: they protect the operator)."""

    template_max_bytes: int = 512 << 20
    template_max_files: int = 50_000
    answer_max_bytes: int = 16 << 20


@dataclass(frozen=True)
class Checked:
    """A URL that passed, with the addresses it may be connected to (in resolver order)."""

    url: str
    scheme: str
    host: str
    port: int
    addresses: tuple[IPAddress, ...]


def _port(parts: SplitResult) -> int:
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port is None:
        return 443 if parts.scheme == "https" else 80
    return port


def display(url: str) -> str:
    """The URL without user and password, for messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(an unparsable URL)"
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]).geturl()


def _normalised(parts: SplitResult) -> str:
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None and parts.port != {"https": 443, "http": 80}.get(parts.scheme):
        netloc += f":{parts.port}"
    rest = parts.path or "/"
    return f"{parts.scheme}://{netloc}{rest}"


def _prefix_matches(prefix: str, url: str) -> bool:
    """`url` (normalised) starts with `prefix` at a boundary: "https://git.example" does not
    match "https://git.example.evil/". Scheme and host compare case-insensitively."""
    scheme, _, rest = prefix.partition("://")
    host, slash, path = rest.partition("/")
    prefix = f"{scheme.lower()}://{host.lower()}{slash}{path}"
    if not url.startswith(prefix):
        return False
    return prefix.endswith(("/", ":")) or len(url) == len(prefix) or url[len(prefix)] in "/:?#"


@dataclass
class Guard:
    """The policy bound to one namespace: every check of that namespace's URLs goes through here."""

    policy: Policy
    namespace: str
    labels: Mapping[str, str] = field(default_factory=dict)
    resolver: Resolver = field(default_factory=Resolver)
    extra_cluster_networks: tuple[IPNetwork, ...] = ()
    limits: Limits = field(default_factory=Limits)
    origin: str = DEFAULT_ORIGIN

    def _applies(self, selector: NamespaceSelector | None) -> bool:
        return selector is None or selector.matches(self.labels)

    def _where(self) -> str:
        return f"namespace {self.namespace}" if self.namespace else "this run"

    def check(self, kind: Kind, url: str) -> Checked:
        """Check `url` and resolve its host; raise Refused. Call it right before connecting."""
        shown = display(url)
        try:
            parts = urlsplit(url.removeprefix("git+"))
            host = parts.hostname
            port = _port(parts)
        except ValueError:
            raise Refused(f"{shown!r} is not a URL the outbound policy can check", "url") from None
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not host or port < 0:
            raise Refused(
                f"{shown} is refused: only http(s) URLs with a host are fetched (rule schemes)", "schemes"
            )
        self.check_prefix(kind, _normalised(parts), shown)
        return Checked(
            url=url, scheme=scheme, host=host, port=port, addresses=self.addresses(kind, host, port, shown)
        )

    def check_prefix(self, kind: Kind, normalised: str, shown: str) -> None:
        name = RULES[kind]
        rules = [r for r in getattr(self.policy, name) if self._applies(r.namespace_selector)]
        if any(_prefix_matches(r.url_prefix, normalised) for r in rules):
            return
        allowed = ", ".join(sorted({r.url_prefix for r in rules})) or "nothing"
        raise Refused(
            f"{shown} is refused by rule {name}: no urlPrefix allowed in {self._where()} matches it "
            f"(allowed here: {allowed}); an admin can add a {name} entry for this namespace to {self.origin}",
            name,
        )

    def addresses(self, kind: Kind, host: str, port: int, shown: str | None = None) -> tuple[IPAddress, ...]:
        """Every address of `host`, each public or allowed by an `internal` entry; else Refused."""
        shown = shown or host
        try:
            found = self.resolver.resolve(host, port)
        except ResolutionError as exc:
            raise Refused(
                f"{shown} is refused: {exc} (rule internal: an unresolvable name is not fetched)", "internal"
            ) from None
        networks = (
            *parse_networks(self.policy.cluster_networks, "clusterNetworks"),
            *self.extra_cluster_networks,
        )
        rules = [r for r in self.policy.internal if self._applies(r.namespace_selector)]
        name = host.lower().rstrip(".")
        for address in found:
            reason = internal_reason(address, networks)
            if reason is None:
                continue
            if any(r.host is not None and r.host.lower().rstrip(".") == name for r in rules):
                continue
            if any(
                (net := r.network()) is not None and address.version == net.version and address in net
                for r in rules
            ):
                continue
            via = f"{host} resolves to {address}" if str(address) != host.strip("[]") else f"{address}"
            raise Refused(
                f"{shown} is refused by rule internal: {via}, a {reason} address, and no internal entry "
                f"allows it in {self._where()}; an admin can add one (host: {host} or a cidr containing "
                f"{address}) for this namespace to {self.origin}",
                "internal",
            )
        return found
