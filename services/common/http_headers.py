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

#: Response headers the gateway sets itself on a model call's answer (SPEC 2.1, 3.2): an
#: upstream's copy is dropped wherever the router or the gateway builds the downstream headers,
#: so an upstream can neither forge a credential warning or an authentication report nor
#: overwrite the client's rate-limit budget. Not listed: `Retry-After`, which the gateway sets
#: only on its own 429s (never on a relayed answer) and which the SDKs honour on an upstream's
#: 429/503; and `X-Request-Id`, which the gateway relays as `X-Upstream-Request-Id`.
GATEWAY_RESPONSE_HEADERS = frozenset(
    {
        "x-debug-auth",
        "x-credential-warning",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        "x-upstream-request-id",
    }
)
