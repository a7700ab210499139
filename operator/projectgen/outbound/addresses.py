"""Which addresses are internal, and how names are resolved for the policy.

An address is internal when it is not globally routable (loopback, link-local, private, unique-local
IPv6, shared, reserved, multicast, unspecified) or lies in one of the cluster's own service and pod
ranges. An IPv6 address that carries an IPv4 address reaches that IPv4 host through a translator or
tunnel, so the IPv4 address is judged by the same rules: IPv4-mapped `::ffff:a.b.c.d`, SIIT
`::ffff:0:a.b.c.d`, IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`, 6to4 `2002:AABB:CCDD::`,
Teredo (server and client) and ISATAP interface identifiers (`…:0:5efe:a.b.c.d`). A NAT64 address of a
public IPv4 host passes (a DNS64 cluster reaches GitHub that way).

The standard library's own answer is not enough and changes between patch releases: the Python CI
uses (3.11.7) calls `64:ff9b::a9fe:a9fe` (NAT64 for 169.254.169.254) and `2002:7f00:1::` global;
later releases added the local-use NAT64 prefix, 6to4 and 3fff::/20 to their not-global list. Those
are listed here (`_NOT_GLOBAL_V6`), so every supported Python gives the same verdict, with two that
every Python calls global: site-local `fec0::/10` (deprecated, but routed inside the sites that use
it) and the SRv6 block `5f00::/16`.

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
_SIIT = ipaddress.ip_network("::ffff:0:0:0/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NOT_GLOBAL_V6 = (
    # RFC 8215: the IPv4 address sits where the site's translator puts it; not routed on the internet.
    (ipaddress.ip_network("64:ff9b:1::/48"), "local-use NAT64"),
    # RFC 7526 deprecated 6to4; it reaches IPv4 hosts through whichever relay is nearest.
    (ipaddress.ip_network("2002::/16"), "6to4"),
    (ipaddress.ip_network("3fff::/20"), "documentation"),  # RFC 9637
    (ipaddress.ip_network("5f00::/16"), "SRv6 segment identifiers"),  # RFC 9602: not globally reachable
    # Deprecated (RFC 3879), but still routed inside the sites that use it.
    (ipaddress.ip_network("fec0::/10"), "site-local IPv6"),
)
_ISATAP_MASK = 0xFCFFFFFF  # the interface identifier's high half, without its u and g bits
_ISATAP_ID = 0x00005EFE


class ResolutionError(Exception):
    """A name that does not resolve (the connection would fail anyway)."""


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[tuple[str, ipaddress.IPv4Address]]:
    """The IPv4 addresses `address` carries, each with the name of the form that carries it
    (IPv4-mapped aside: `internal_reason` judges such an address as the IPv4 address itself)."""
    low = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    found: list[tuple[str, ipaddress.IPv4Address]] = []
    if address in _SIIT:
        found.append(("SIIT", low))
    elif address in _NAT64:
        found.append(("NAT64", low))
    elif address in _IPV4_COMPATIBLE and int(address) > 1:
        found.append(("IPv4-compatible", low))
    if address.sixtofour is not None:
        found.append(("6to4", address.sixtofour))
    if address.teredo is not None:
        server, client = address.teredo
        found += [("Teredo server", server), ("Teredo client", client)]
    if (int(address) >> 32) & _ISATAP_MASK == _ISATAP_ID:
        found.append(("ISATAP", low))
    return found


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
    if isinstance(address, ipaddress.IPv6Address):
        if address in _UNIQUE_LOCAL:
            return "unique-local IPv6"
        for form, carried in embedded_ipv4(address):
            reason = internal_reason(carried, cluster_networks)
            if reason is not None:
                return f"{reason} (IPv4 {carried} inside, as {form})"
        for network, name in _NOT_GLOBAL_V6:
            if address in network:
                return f"{name} ({network})"
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
