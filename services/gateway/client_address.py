"""The key under which a client address's failed authentications are counted.

An IPv4 address is counted on its own; an IPv6 address by its /64, since one host or one
customer commonly holds a whole /64 and could otherwise take a fresh address per request.
An IPv4-mapped IPv6 address counts as the IPv4 address. Anything else (a Unix socket, a test
client's name) is used as it is. The address is the one uvicorn reports: behind a proxy, the
client's only if uvicorn trusts that proxy (`GATEWAY_FORWARDED_ALLOW_IPS`).
"""

from __future__ import annotations

import ipaddress


def address_key(host: str) -> str:
    """`host` for IPv4 (and other strings), its /64 network for IPv6."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)
