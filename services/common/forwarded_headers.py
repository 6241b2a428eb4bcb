"""Which client request headers travel from the gateway through the router upstream (SPEC 2.6).

Pure: no I/O, no grpc. The gateway passes only these to the router and the router forwards only
these (after the provider's own headers, which win). The client's own authentication
(`authorization`, `x-api-key`, cookies) is never on the list. Names compare case-insensitively.
"""

from __future__ import annotations

from collections.abc import Iterable

FORWARDED_CLIENT_HEADERS = frozenset(
    {
        "content-type",
        "accept",
        "anthropic-version",
        "anthropic-beta",
        "openai-beta",
        "user-agent",
        "x-request-id",
    }
)
"""Lower-case names of the client headers that are forwarded."""

FORWARDED_CLIENT_HEADERS_RAW = frozenset(
    name.encode("latin-1") for name in FORWARDED_CLIENT_HEADERS
)
"""The same names as bytes, for an ASGI scope's raw (already lower-case) header names."""

NEVER_FORWARDED = frozenset({"authorization", "proxy-authorization", "x-api-key", "cookie"})
"""The client's credentials: never forwarded, whatever the list above says."""


def is_forwarded_client_header(name: str) -> bool:
    return name.lower() in FORWARDED_CLIENT_HEADERS


def forwarded_client_headers(
    headers: Iterable[tuple[bytes, bytes]],
) -> list[tuple[bytes, bytes]]:
    """The allowlisted pairs of an ASGI scope's raw headers, in order. ASGI names are already
    lower-case, so this is one set lookup per header (it runs on every model call)."""
    return [(name, value) for name, value in headers if name in FORWARDED_CLIENT_HEADERS_RAW]
