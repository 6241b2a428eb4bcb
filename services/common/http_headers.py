"""HTTP header facts shared by the router and the gateway."""

from __future__ import annotations

#: Headers that describe one connection, not the message (RFC 9110 7.6.1): never forwarded
#: across a proxy hop, in either direction.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
