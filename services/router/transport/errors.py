"""The one place where httpcore's and httpx's errors become the router's.

The transport raises httpcore's error types (its network backend implements httpcore's
interface; `http11.py` raises `RemoteProtocolError` and `LocalProtocolError` as h11 did).
httpcore has no common base class for what goes wrong on the wire, and httpx's URL parser has
its own `InvalidURL`; nothing outside this package catches either. As httpx's
`_transports/default.py` maps httpcore's exceptions to its own in one table, `EXCHANGE_ERRORS`
below says what each lower-layer error becomes while a request is sent and its head awaited
(first match wins); the few other moments a caller can meet one (the body stream, a base URL
parsed, a host name resolved for a check) each have one line here too.

Messages are public: they name the upstream's host, never a path, a query or a header.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import httpcore
import httpx

from services.common.errors import AicredsError, InvalidArgument
from services.router.errors import UpstreamTimeout, UpstreamUnavailable, UpstreamUnresolved
from services.router.transport.egress_backend import NameNotResolved

WIRE_ERRORS: tuple[type[Exception], ...] = (
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.TimeoutException,
    httpcore.UnsupportedProtocol,
    httpcore.ProxyError,
)
"""Every error httpcore raises for a request on the wire."""

_EXCHANGE_CAUGHT: tuple[type[Exception], ...] = (*WIRE_ERRORS, httpx.InvalidURL)

EXCHANGE_ERRORS: tuple[
    tuple[type[Exception] | tuple[type[Exception], ...], type[AicredsError], str], ...
] = (
    # A name that does not resolve (in time) is UNAVAILABLE, never a timeout (SPEC 3.5).
    (NameNotResolved, UpstreamUnresolved, "could not resolve the upstream {host}"),
    # Only when the connect timeout, not the call's deadline, was the bound (see below).
    (
        httpcore.ConnectTimeout,
        UpstreamUnavailable,
        "the upstream did not accept a connection within {connect_timeout:g} s",
    ),
    # The first-byte timeout (ROUTER_UPSTREAM_FIRST_BYTE_TIMEOUT) bounds each read and write
    # until the response's head has arrived.
    (
        (httpcore.ReadTimeout, httpcore.WriteTimeout),
        UpstreamTimeout,
        "the upstream sent no answer within {first_byte_timeout:g} s",
    ),
    (httpcore.TimeoutException, UpstreamTimeout, "the upstream did not answer in time"),
    (httpcore.ConnectError, UpstreamUnavailable, "could not connect to the upstream {host}"),
    (
        httpcore.RemoteProtocolError,
        UpstreamUnavailable,
        "the upstream {host} broke the HTTP protocol",
    ),
    (
        _EXCHANGE_CAUGHT,
        UpstreamUnavailable,
        "the connection to the upstream {host} failed",
    ),
)
"""Sending a request up to the response's head: lower-layer error -> ours, public message."""


def _host_of(url: str) -> str:
    try:
        return httpx.URL(url).host
    except httpx.InvalidURL:
        return "(invalid URL)"


@contextlib.contextmanager
def exchange_errors(
    url: str,
    *,
    connect_timeout: float,
    deadline_left: float,
    first_byte_timeout: float | None = None,
) -> Iterator[None]:
    """Map what sending a request to `url` raises, by `EXCHANGE_ERRORS`.

    A connect timeout as long as the time the call had left means the call's deadline ran out
    while connecting: UpstreamTimeout, not an upstream that refuses connections.
    """
    try:
        yield
    except _EXCHANGE_CAUGHT as err:
        if isinstance(err, httpcore.ConnectTimeout) and connect_timeout >= deadline_left:
            raise UpstreamTimeout("the call's deadline passed while connecting") from None
        for lower, ours, message in EXCHANGE_ERRORS:
            if isinstance(err, lower):
                host = _host_of(url) if "{host}" in message else ""
                raise ours(
                    message.format(
                        host=host,
                        connect_timeout=connect_timeout,
                        first_byte_timeout=first_byte_timeout or deadline_left,
                    )
                ) from None
        raise  # not reached: the last row matches every error caught


@contextlib.contextmanager
def body_errors(idle_timeout: float | None = None) -> Iterator[None]:
    """While the body streams, a read timeout is the idle timeout
    (ROUTER_UPSTREAM_IDLE_TIMEOUT); any other wire error means the connection was lost."""
    try:
        yield
    except httpcore.ReadTimeout:
        raise UpstreamTimeout(
            f"the upstream sent nothing for {idle_timeout or 0:g} s in the middle of its answer"
        ) from None
    except WIRE_ERRORS:
        raise UpstreamUnavailable("the upstream connection was lost mid-response") from None


@contextlib.contextmanager
def base_url_errors() -> Iterator[None]:
    """Joining a call's URL: a base URL the router cannot send to (the vault stores none)."""
    try:
        yield
    except (httpx.InvalidURL, httpcore.UnsupportedProtocol):
        raise UpstreamUnavailable(
            "the provider's base_url is not an http or https URL the router can call"
        ) from None


@contextlib.contextmanager
def checked_base_url_errors() -> Iterator[None]:
    """A base URL given to be checked (`CheckUpstream`): the caller's argument is at fault."""
    try:
        yield
    except (httpx.InvalidURL, TypeError):
        raise InvalidArgument("base_url is not a valid URL") from None
    except httpcore.UnsupportedProtocol:
        raise InvalidArgument(
            "base_url must be an absolute http or https URL with a host"
        ) from None


@contextlib.contextmanager
def resolve_errors(host: str) -> Iterator[None]:
    """Resolving a host for a check: a name that does not resolve (in time)."""
    try:
        yield
    except (httpcore.ConnectError, httpcore.ConnectTimeout):
        raise UpstreamUnresolved(f"could not resolve {host}") from None
