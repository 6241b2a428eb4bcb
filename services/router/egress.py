"""The egress policy (SPEC 3.4): which upstream addresses the router may connect to.

By default only globally routable unicast addresses are allowed: loopback, private, link-local
(cloud metadata at 169.254.169.254), multicast, unspecified, shared (100.64/10) and reserved
ranges are refused, as are IPv4 addresses hidden in IPv6 (`::ffff:10.0.0.1`). The operator opens
specific ones with `ROUTER_EGRESS_ALLOW`: a comma-separated list of `host`, `host:port`,
`[v6]:port` or CIDR entries.

The check runs on the address actually connected to: `EgressNetworkBackend`
(`transport/egress_backend.py`) sits under the upstream client's connection pool, resolves the
host itself (through an injectable resolver), checks **every** address the name resolves to
with `EgressPolicy.check` and then connects to a checked address. A DNS
answer that changes between a pre-flight check and the connection (DNS rebinding) therefore
cannot get around it, while TLS still verifies the original host name (sent as SNI). Nothing is
sent before the check passes. No grpc, httpcore or httpx here: the policy is pure.

A refusal tells the caller the host and the category of the address (`resolves to a private
address`), never the address a name resolved to: otherwise saving providers would let any user
read the internal DNS (which internal name is at which private address). The router's log line
(`egress refused`) names the address, for operators.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from services.router.errors import EgressRefused

_log = logging.getLogger("aicreds.router.egress")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
"""Resolves (host, port) to IP address strings; raises OSError when the name does not resolve."""


async def system_resolver(host: str, port: int) -> list[str]:
    """The operating system's resolver (getaddrinfo), addresses in its order, de-duplicated."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: dict[str, None] = {}
    for info in infos:
        seen.setdefault(str(info[4][0]), None)
    return list(seen)


def parse_ip(text: str) -> IPAddress | None:
    """`text` as an IP address (brackets and an IPv6 zone are not accepted), or None."""
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None


def refused_category(ip: IPAddress) -> str | None:
    """Why the default policy refuses `ip` (e.g. `private`), or None if it is allowed."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is not None:
            inner = refused_category(embedded)
            return f"{inner} (IPv4 inside IPv6)" if inner else None
    if ip.is_unspecified:
        return "unspecified"
    # fec0::/10, deprecated (RFC 3879) but still routed inside some networks; Python's
    # `is_global` calls it global.
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return "site-local"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip.is_private:
        return "private"
    if ip.is_reserved or not ip.is_global:
        return "reserved"
    return None


@dataclass(frozen=True)
class AllowRule:
    """One `ROUTER_EGRESS_ALLOW` entry: a host name or a network, optionally one port."""

    host: str | None = None
    network: IPNetwork | None = None
    port: int | None = None

    @classmethod
    def parse(cls, entry: str) -> AllowRule:
        """Parse `host`, `host:port`, `1.2.3.4`, `1.2.3.4:443`, `[::1]:80`, `::1` or a CIDR."""
        text = entry.strip()
        if not text:
            raise ValueError("ROUTER_EGRESS_ALLOW has an empty entry")
        if "/" in text:
            try:
                return cls(network=ipaddress.ip_network(text, strict=False))
            except ValueError:
                raise ValueError(f"ROUTER_EGRESS_ALLOW: {text!r} is not a CIDR") from None
        port: int | None = None
        host = text
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            if rest:
                port = cls._port(text, rest.removeprefix(":"))
        elif text.count(":") == 1:
            host, _, raw_port = text.partition(":")
            port = cls._port(text, raw_port)
        ip = parse_ip(host)
        if ip is not None:
            return cls(network=ipaddress.ip_network(ip), port=port)
        if not host or any(c in host for c in " /@[]"):
            raise ValueError(f"ROUTER_EGRESS_ALLOW: {text!r} is not a host name")
        return cls(host=host.lower().rstrip("."), port=port)

    @staticmethod
    def _port(entry: str, raw: str) -> int:
        if not raw.isdigit() or not 0 < int(raw) < 65536:
            raise ValueError(f"ROUTER_EGRESS_ALLOW: {entry!r} has a bad port")
        return int(raw)

    def matches(self, host: str, ip: IPAddress, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.network is not None:
            return ip.version == self.network.version and ip in self.network
        return self.host == host.lower().rstrip(".")


class EgressPolicy:
    """Decides whether the router may connect to an address of an upstream host."""

    def __init__(self, allow: Iterable[AllowRule] = ()) -> None:
        self._allow = tuple(allow)

    @classmethod
    def from_setting(cls, text: str) -> EgressPolicy:
        """Build from `ROUTER_EGRESS_ALLOW` (comma-separated entries; empty: default policy)."""
        return cls(AllowRule.parse(e) for e in text.split(",") if e.strip())

    def __repr__(self) -> str:
        return f"EgressPolicy(allow={list(self._allow)!r})"

    def refusal(self, host: str, ip: IPAddress, port: int) -> str | None:
        """Why connecting to `ip` for `host:port` is refused, or None if it is allowed."""
        if any(rule.matches(host, ip, port) for rule in self._allow):
            return None
        category = refused_category(ip)
        if category is None:
            return None
        return f"{category} address"

    def check(self, host: str, addresses: Sequence[str], port: int) -> list[str]:
        """The addresses to try, in order; raises EgressRefused if **any** of them is refused.

        Refusing the whole name when one answer is bad closes the trick of mixing a public and
        a private address in one DNS answer.
        """
        checked: list[str] = []
        for address in addresses:
            ip = parse_ip(address)
            if ip is None:
                raise EgressRefused(f"upstream {host}: resolver returned a non-IP answer")
            why = self.refusal(host, ip, port)
            if why is not None:
                _log.warning(
                    "egress refused",
                    extra={"fields": {"host": host, "port": port, "address": str(ip), "why": why}},
                )
                verb = "is" if host == str(ip) else "resolves to"
                raise EgressRefused(
                    f"upstream {host} port {port} {verb} a {why}; refused by the router's egress "
                    "policy (an operator can allow it with ROUTER_EGRESS_ALLOW)"
                )
            checked.append(str(ip))
        return checked
