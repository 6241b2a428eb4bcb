"""The upstream HTTP client: one request, streamed, on a pooled connection behind the egress
policy.

`UpstreamClient.stream` sends one request and yields an `UpstreamResponse` as soon as the
upstream's head arrives; its body chunks are forwarded as they are read from the socket, never
buffered whole. The bytes are forwarded raw (still compressed if the upstream compressed them)
together with the upstream's `Content-Encoding`, so that what the caller receives is exactly
what the upstream sent. The router asks for `Accept-Encoding: identity` unless the provider's
headers say otherwise, because the caller's own Accept-Encoding is not forwarded.

The requests go to HTTP/1.1 connections of our own on httptools' parser (`http11.py`), kept
in a small pool of our own (`pool.py`): httpx's client layers (cookies, redirects, auth,
proxies from the environment, event hooks) would do nothing here but cost CPU on every call,
httpcore's pool checks every idle connection on every request, and h11 parses every response
event in Python. Each body chunk handed on is everything one socket read completed: chunks
that arrived together leave together. What those layers would have decided is
fixed here instead: no cookie is kept or sent, no redirect is followed, no proxy is used.

Time: the whole exchange is bounded by an absolute deadline (the caller's gRPC deadline, or the
router's default). Within it, apart from it (SPEC 3.5): resolving the host by the resolve
timeout, connecting by the connect timeout, waiting for a pooled connection and then for the
response's head by the first-byte timeout, and each wait for more of the body by the idle
timeout. Leaving the `stream` block early (a cancelled call) closes the upstream connection at
once.

Errors (mapped in `errors.py`): a refused or failed connection is UpstreamUnavailable, as is a
connection lost mid-response; running out of time is UpstreamTimeout; the egress policy raises
EgressRefused.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field

import httpx

from services.router.egress import EgressPolicy, Resolver
from services.router.errors import UpstreamTimeout
from services.router.headers import downstream_response_headers
from services.router.resolver import ThreadedResolver
from services.router.transport.asyncio_stream import NetworkBackend
from services.router.transport.egress_backend import EgressNetworkBackend
from services.router.transport.errors import body_errors, exchange_errors, resolve_errors
from services.router.transport.http11 import HTTP11Connection, HTTP11Response
from services.router.transport.pool import ConnectionPool, PoolWait, close_in_background
from services.router.transport.target import OriginKey, UpstreamTarget

# Sent unless the request's headers name them (what httpx's client sent by default).
_DEFAULT_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"Accept", b"*/*"),
    (b"Accept-Encoding", b"identity"),
    (b"Connection", b"keep-alive"),
    (b"User-Agent", b"aicreds-router"),
)
_DEFAULT_NAMES = frozenset(name.decode("ascii").lower() for name, _ in _DEFAULT_HEADERS)
_BODY_METHODS = frozenset({b"POST", b"PUT", b"PATCH"})


def _wire_headers(
    netloc: bytes, method: bytes, headers: Iterable[tuple[str, str]], body: bytes
) -> list[tuple[bytes, bytes]]:
    """`Host`, the request's headers, the defaults it does not override, `Content-Length`."""
    out: list[tuple[bytes, bytes]] = [(b"Host", netloc)]
    named: set[str] = set()
    for name, value in headers:
        named.add(name.lower())
        # Values as UTF-8 bytes: HTTP carries such bytes as obs-text; names are checked
        # tokens, so ASCII.
        out.append((name.encode("ascii"), value.encode("utf-8")))
    if named.isdisjoint(_DEFAULT_NAMES):
        out.extend(_DEFAULT_HEADERS)
    else:
        out.extend(line for line in _DEFAULT_HEADERS if line[0].decode().lower() not in named)
    if body or method in _BODY_METHODS:
        out.append((b"Content-Length", str(len(body)).encode("ascii")))
    return out


@dataclass(frozen=True)
class UpstreamRequest:
    """One request to send upstream (headers are already final: substituted and filtered).

    `target` is `url` already parsed, when the caller has it.
    """

    method: str
    # The caller's query may carry a key (`?key=...`): never in a repr.
    url: str = field(repr=False)
    headers: Sequence[tuple[str, str]] = field(repr=False)
    body: bytes = field(default=b"", repr=False)
    target: UpstreamTarget | None = field(default=None, repr=False, compare=False)


class UpstreamResponse:
    """The upstream's head, and its body as an async iterator of raw chunks."""

    def __init__(
        self, response: HTTP11Response, release: _Release, idle_timeout: float | None = None
    ) -> None:
        self._response = response
        self._release = release
        self._idle_timeout = idle_timeout
        self.status = response.status
        self.bytes_received = 0
        self.chunks_received = 0
        self._observer: Callable[[bytes], None] | None = None
        self.headers = downstream_response_headers(
            (name.decode("latin-1"), value.decode("latin-1")) for name, value in response.headers
        )

    def __repr__(self) -> str:
        return f"UpstreamResponse(status={self.status})"

    def observe(self, observer: Callable[[bytes], None]) -> None:
        """Show `observer` each chunk once it has been handed on: it runs when the consumer
        asks for the next chunk, so it never delays one (it must not raise)."""
        self._observer = observer

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives, one piece per socket read (all it completed, chunked framing
        removed); UpstreamUnavailable if the connection drops."""
        with body_errors(self._idle_timeout):
            async for chunk in self._response.pieces():
                if chunk:
                    self.bytes_received += len(chunk)
                    self.chunks_received += 1
                    yield chunk
                    if self._observer is not None:
                        self._observer(chunk)

    def abort(self) -> None:
        """Close the upstream connection soon, from a callback (e.g. the RPC was cancelled)."""
        if not self._release.done:
            close_in_background(self._release.close(self._response))


class _Release:
    """Closes one response and gives its connection back to the pool, once."""

    __slots__ = ("_connection", "_key", "_pool", "done")

    def __init__(self, pool: ConnectionPool, key: OriginKey, connection: HTTP11Connection) -> None:
        self._pool = pool
        self._key = key
        self._connection = connection
        self.done = False

    async def close(self, response: HTTP11Response | None) -> None:
        if self.done:
            return
        self.done = True
        try:
            if response is not None:
                # Closing a response not read to its end closes the connection.
                await response.aclose()
        finally:
            await self._pool.release(self._key, self._connection)


def _ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """httpx's default context (certifi's CAs), or one trusting only `ca_file`."""
    if ca_file is None:
        return httpx.create_ssl_context()
    return ssl.create_default_context(cafile=ca_file)


class UpstreamClient:
    """A pool of HTTP/1.1 connections whose every connection passes the egress policy.

    Without a `resolver`, names are resolved by a `ThreadedResolver` of its own (closed with
    the client); timeouts are in seconds (see the module's docstring).
    """

    def __init__(
        self,
        policy: EgressPolicy,
        *,
        resolver: Resolver | None = None,
        connect_timeout: float = 10.0,
        resolve_timeout: float = 5.0,
        first_byte_timeout: float = 300.0,
        idle_timeout: float = 120.0,
        network_backend: NetworkBackend | None = None,
        ca_file: str | None = None,
        max_connections: int = 1000,
        max_connections_per_origin: int = 100,
        max_keepalive: int = 100,
        keepalive_expiry: float = 60.0,
    ) -> None:
        self._connect_timeout = connect_timeout
        self._first_byte_timeout = first_byte_timeout
        self._idle_timeout = idle_timeout
        self._own_resolver = ThreadedResolver() if resolver is None else None
        self.backend = EgressNetworkBackend(
            policy,
            resolver if resolver is not None else self._own_resolver or ThreadedResolver(),
            network_backend,
            resolve_timeout=resolve_timeout,
        )
        # No proxy is ever used (an HTTP(S)_PROXY variable must not route around the egress
        # policy), no cookie is kept (the client is shared by every user's calls) and no
        # redirect is followed: this client has none of those features.
        self._pool = ConnectionPool(
            self.backend,
            _ssl_context(ca_file),
            max_connections=max_connections,
            max_per_origin=max_connections_per_origin,
            max_keepalive=max_keepalive,
            keepalive_expiry=keepalive_expiry,
        )

    def connections_in_use(self) -> int:
        """Pooled connections carrying a request now, or being opened for one."""
        return self._pool.in_use

    def connections_idle(self) -> int:
        """Pooled connections kept open for reuse."""
        return self._pool.idle

    async def aclose(self) -> None:
        await self._pool.aclose()
        if self._own_resolver is not None:
            self._own_resolver.close()

    async def checked_addresses(self, host: str, port: int, *, deadline: float) -> list[str]:
        """The addresses a connection to `host:port` would try, resolved and checked exactly
        as a connection does it, within the connect timeout; nothing is sent.

        Raises:
            EgressRefused: the policy refuses one of them.
            UpstreamUnresolved: the name did not resolve (in time).
        """
        remaining = deadline - asyncio.get_running_loop().time()
        timeout = max(0.0, min(self._connect_timeout, remaining))
        with resolve_errors(host):
            return await self.backend.addresses_for(host, port, timeout)

    @contextlib.asynccontextmanager
    async def stream(
        self, request: UpstreamRequest, *, deadline: float
    ) -> AsyncIterator[UpstreamResponse]:
        """Send `request`; yield the response once its head arrived; close it on exit.

        Args:
            request: what to send.
            deadline: absolute `loop.time()` by which the whole exchange must be over.
        """
        loop = asyncio.get_running_loop()
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise UpstreamTimeout("the call's deadline passed before the upstream was called")
        connect = min(self._connect_timeout, remaining)
        release: _Release | None = None
        wait = PoolWait()
        response: HTTP11Response | None = None
        first_byte = self._first_byte_timeout
        try:
            async with asyncio.timeout_at(deadline):
                with exchange_errors(
                    request.url,
                    connect_timeout=connect,
                    deadline_left=remaining,
                    first_byte_timeout=first_byte,
                ):
                    target = request.target or UpstreamTarget(request.url)
                    method = request.method.encode("ascii")
                    headers = _wire_headers(target.netloc, method, request.headers, request.body)
                    connection = await self._pool.acquire(
                        target, connect, wait, wait_timeout=first_byte
                    )
                    release = _Release(self._pool, target.key, connection)
                    response = await connection.request(
                        method,
                        target.target,
                        headers,
                        request.body,
                        first_byte_timeout=first_byte,
                        idle_timeout=self._idle_timeout,
                    )
                yield UpstreamResponse(response, release, self._idle_timeout)
        except TimeoutError:
            if wait.for_origin:
                raise UpstreamTimeout(
                    f"every connection the router may open to {target.origin_text} stayed busy"
                    " (ROUTER_MAX_CONNECTIONS_PER_ORIGIN)"
                ) from None
            if wait.for_room:
                raise UpstreamTimeout(
                    "every upstream connection of the router stayed busy"
                ) from None
            raise UpstreamTimeout(
                "the upstream did not finish before the call's deadline"
            ) from None
        finally:
            if release is not None:
                await release.close(response)
