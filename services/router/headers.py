"""Which headers go upstream and which come back (SPEC 2.6, 3.3). Pure, no grpc.

Upstream request headers are the provider's configured headers (after substitution) plus the
client's headers that are on an allowlist and that the provider does not set itself. The
client's own authentication (`Authorization`, `x-api-key`, cookies) is never on the list.
Hop-by-hop headers (RFC 9110 section 7.6.1, plus any the `Connection` header names) are dropped
in both directions; the transport (`transport/client.py`) writes `Host` from the base URL and
`Content-Length` from the body itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from services.common.forwarded_headers import FORWARDED_CLIENT_HEADERS
from services.common.header_bounds import HeaderBounds, HeaderBudget
from services.common.http_headers import GATEWAY_RESPONSE_HEADERS, HOP_BY_HOP
from services.router.errors import BadInvokeRequest, HeaderTooLarge

# Written by the transport from the URL and the body; a configured value would contradict them.
_COMPUTED = frozenset({"host", "content-length"})

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_EDGE_WHITESPACE = (" ", "\t")


def check_header(name: str, value: str) -> None:
    """Refuse a header that cannot be sent as is (the message names the header, not the value)."""
    if not _TOKEN.fullmatch(name):
        raise BadInvokeRequest(f"header name {name!r} is not a valid HTTP token")
    if _BAD_VALUE.search(value):
        raise BadInvokeRequest(f"header {name!r} has a control character in its value")
    if value[:1] in _EDGE_WHITESPACE or value[-1:] in _EDGE_WHITESPACE:
        # HTTP cannot carry it as is: refused here, with a message of ours, before the HTTP
        # library refuses it with one that quotes the value (a credential, once substituted).
        raise BadInvokeRequest(f"header {name!r} has a space or tab first or last in its value")


def _connection_named(headers: Iterable[tuple[str, str]]) -> set[str]:
    named: set[str] = set()
    for name, value in headers:
        if name.lower() == "connection":
            named.update(part.strip().lower() for part in value.split(",") if part.strip())
    return named


def upstream_request_headers(
    provider: Sequence[tuple[str, str]], client: Sequence[tuple[str, str]]
) -> list[tuple[str, str]]:
    """The headers to send upstream: the provider's, then the allowed client headers it lacks.

    Args:
        provider: the provider's headers after substitution, one line per value.
        client: the headers the caller passed in InvokeRequest.

    Raises:
        BadInvokeRequest: a header name or value that HTTP cannot carry.
    """
    provider_names = {name.lower() for name, _ in provider}
    out: list[tuple[str, str]] = []
    for name, value in provider:
        lowered = name.lower()
        if lowered in HOP_BY_HOP or lowered in _COMPUTED:
            continue
        check_header(name, value)
        out.append((name, value))
    for name, value in client:
        lowered = name.lower()
        if lowered not in FORWARDED_CLIENT_HEADERS or lowered in provider_names:
            continue
        check_header(name, value)
        out.append((name, value))
    return out


def check_headers_size(headers: Iterable[tuple[str, str]], bounds: HeaderBounds) -> None:
    """Raise HeaderTooLarge if the final request headers (the provider's, already bounded while
    substituted, and the caller's forwarded ones) pass a bound together (SPEC 3.5)."""
    budget = HeaderBudget(bounds)
    for name, value in headers:
        problem = budget.take(name, len(value.encode("utf-8", "surrogateescape")))
        if problem:
            raise HeaderTooLarge(problem)


def downstream_response_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The upstream's response headers without hop-by-hop ones and without those the gateway
    sets itself (`GATEWAY_RESPONSE_HEADERS`)."""
    lines = list(headers)
    drop = HOP_BY_HOP | GATEWAY_RESPONSE_HEADERS | _connection_named(lines)
    return [(name, value) for name, value in lines if name.lower() not in drop]
