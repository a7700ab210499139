"""Which addresses are internal, and how names are resolved for the policy.

An address is internal when it is not globally routable (loopback, link-local, private, unique-local
IPv6, shared, reserved, multicast, unspecified) or lies in one of the cluster's own service and pod
ranges; IPv4-mapped IPv6 addresses are judged by the IPv4 address they carry.

Names are resolved once, here, and the connection is then made to exactly the addresses that were
checked (git: `http.curloptResolve`; HTTP: a connection to the checked address). A hosts file can
answer first (`Resolver(hosts_file=...)`): tests give names to loopback addresses with it, and an
air-gapped install can pin names without touching the node's resolver.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Sequence
from pathlib import Path

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")


class ResolutionError(Exception):
    """A name that does not resolve (the connection would fail anyway)."""


def internal_reason(address: IPAddress, cluster_networks: Sequence[IPNetwork] = ()) -> str | None:
    """Why `address` is internal (a few words for a message), or None for a public address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for network in cluster_networks:
        if address.version == network.version and address in network:
            return f"in the cluster's service/pod range {network}"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_unspecified:
        return "unspecified"
    if isinstance(address, ipaddress.IPv6Address) and address in _UNIQUE_LOCAL:
        return "unique-local IPv6"
    if address.is_multicast:
        return "multicast"
    if address.is_private:
        return "private"
    if not address.is_global:
        return "not globally routable"
    return None


def parse_networks(values: Iterable[str], what: str) -> tuple[IPNetwork, ...]:
    networks: list[IPNetwork] = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{what}: {value!r} is not an IP network (CIDR)") from None
    return tuple(networks)


def read_hosts_file(path: Path) -> dict[str, tuple[IPAddress, ...]]:
    """/etc/hosts syntax: `address name [name ...]`, `#` comments."""
    found: dict[str, list[IPAddress]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2:
            continue
        try:
            address = ipaddress.ip_address(fields[0])
        except ValueError:
            raise ValueError(f"{path}: {fields[0]!r} is not an IP address") from None
        for name in fields[1:]:
            found.setdefault(name.lower().rstrip("."), []).append(address)
    return {name: tuple(addresses) for name, addresses in found.items()}


class Resolver:
    """Name -> every address it resolves to: the hosts file first, else the system resolver."""

    def __init__(self, hosts_file: Path | None = None) -> None:
        self.hosts_file = hosts_file

    def resolve(self, host: str, port: int) -> tuple[IPAddress, ...]:
        literal = _literal(host)
        if literal is not None:
            return (literal,)
        name = host.lower().rstrip(".")
        if self.hosts_file is not None:
            hosts = read_hosts_file(self.hosts_file)
            if name in hosts:
                return hosts[name]
        try:
            infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise ResolutionError(f"the name {host!r} does not resolve ({exc})") from None
        addresses: list[IPAddress] = []
        for _family, _type, _proto, _canon, sockaddr in infos:
            address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            raise ResolutionError(f"the name {host!r} resolves to no address")
        return tuple(addresses)


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
