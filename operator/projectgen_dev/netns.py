"""A network namespace of our own, for tests that need a non-loopback address.

Why: kube-apiserver refuses loopback addresses in EndpointSlices (and the kubelet refuses a loopback
node IP), so a component the aggregator or a webhook dials must listen on a real address. This host
has no ``dummy`` link type, and we never touch the host's own links or use a private range, so each
namespace gets one veth pair with a /30 from the benchmarking range 198.18.0.0/15 (RFC 2544):

    host side  198.18.x.y+1  (root namespace: the test process reaches the namespace through it)
    ns side    198.18.x.y+2  (inside: where the processes started with :meth:`wrap` listen)

Deleting the namespace deletes the pair, so nothing is left on the host. Names and blocks are
random and checked against the host's links and addresses, so concurrent test runs do not collide.

Usage::

    reason = unavailable()            # None when this process may create namespaces
    with NetworkNamespace() as ns:
        subprocess.run(ns.wrap(["ip", "-brief", "addr"]))
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import subprocess
from collections.abc import Sequence
from types import TracebackType

BENCHMARK_RANGE = ipaddress.IPv4Network("198.18.0.0/16")
"""The half of 198.18.0.0/15 used here; 198.19.0.0/16 holds the control plane's service range."""


class NetnsError(RuntimeError):
    pass


def unavailable() -> str | None:
    """Why network namespaces cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "creating a network namespace needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN)"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    return None


def _ip(*args: str) -> str:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {result.stderr.strip() or result.returncode}")
    return result.stdout


def _used_addresses() -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    used = set()
    for line in _ip("-o", "-4", "addr", "show").splitlines():
        fields = line.split()
        if "inet" in fields:
            used.add(ipaddress.ip_interface(fields[fields.index("inet") + 1]).ip)
    return used


class NetworkNamespace:
    """A network namespace with loopback up and one veth link to the root namespace."""

    def __init__(self) -> None:
        self.name = ""
        self.host_address = ""
        self.address = ""
        self._host_link = ""

    def __enter__(self) -> NetworkNamespace:
        self.create()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.delete()

    def create(self) -> None:
        reason = unavailable()
        if reason is not None:
            raise NetnsError(reason)
        tag = secrets.token_hex(4)
        self.name, self._host_link, inner = f"pg-{tag}", f"pgh{tag}", f"pgn{tag}"
        used = _used_addresses()
        blocks = list(BENCHMARK_RANGE.subnets(new_prefix=30))
        for _ in range(64):
            block = blocks[secrets.randbelow(len(blocks))]
            host, inside = block[1], block[2]
            if host not in used and inside not in used:
                break
        else:
            raise NetnsError(f"no free /30 found in {BENCHMARK_RANGE}")
        self.host_address, self.address = str(host), str(inside)
        try:
            _ip("netns", "add", self.name)
            _ip("link", "add", self._host_link, "type", "veth", "peer", "name", inner, "netns", self.name)
            _ip("addr", "add", f"{host}/30", "dev", self._host_link)
            _ip("link", "set", self._host_link, "up")
            _ip("-n", self.name, "link", "set", "lo", "up")
            _ip("-n", self.name, "addr", "add", f"{inside}/30", "dev", inner)
            _ip("-n", self.name, "link", "set", inner, "up")
        except BaseException:
            self.delete()
            raise

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside the namespace (``ip netns exec`` execs it: the PID stays the same)."""
        if not self.name:
            raise NetnsError("network namespace not created")
        return ["ip", "netns", "exec", self.name, *argv]

    def delete(self) -> None:
        """Remove the namespace and with it the veth pair. Idempotent."""
        if not self.name:
            return
        subprocess.run(["ip", "netns", "delete", self.name], capture_output=True, check=False)
        subprocess.run(["ip", "link", "delete", self._host_link], capture_output=True, check=False)
        self.name = ""
