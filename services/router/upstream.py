"""The upstream HTTP client: pooled httpcore HTTP/1.1 connections, streaming, behind the egress
policy.

`UpstreamClient.stream` sends one request and yields an `UpstreamResponse` as soon as the
upstream's head arrives; its body chunks are forwarded as they are read from the socket, never
buffered whole. The bytes are forwarded raw (still compressed if the upstream compressed them)
together with the upstream's `Content-Encoding`, so that what the caller receives is exactly
what the upstream sent. The router asks for `Accept-Encoding: identity` unless the provider's
headers say otherwise, because the caller's own Accept-Encoding is not forwarded.

The requests go straight to httpcore's HTTP/1.1 connections, kept in a small pool of our own
(`_ConnectionPool`): httpx's client layers (cookies, redirects, auth, proxies from the
environment, event hooks) would do nothing here but cost CPU on every call, and httpcore's own
pool checks every idle connection on every request. What those layers would have decided is
fixed here instead: no cookie is kept or sent, no redirect is followed, no proxy is used.

Time: the whole exchange is bounded by an absolute deadline (the caller's gRPC deadline, or the
router's default); connecting is also bounded by the connect timeout. Leaving the `stream`
block early (a cancelled call) closes the upstream connection at once.

Errors: a refused or failed connection is UpstreamUnavailable, as is a connection lost
mid-response; running out of time is UpstreamTimeout; the egress policy raises EgressRefused.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote

import httpcore
import httpx

from services.router.egress import EgressNetworkBackend, EgressPolicy, Resolver, system_resolver
from services.router.errors import UpstreamTimeout, UpstreamUnavailable
from services.router.headers import downstream_response_headers

# Sent unless the request's headers name them (what httpx's client sent by default).
_DEFAULT_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"Accept", b"*/*"),
    (b"Accept-Encoding", b"identity"),
    (b"Connection", b"keep-alive"),
    (b"User-Agent", b"aicreds-router"),
)
_DEFAULT_NAMES = frozenset(name.decode("ascii").lower() for name, _ in _DEFAULT_HEADERS)
_BODY_METHODS = frozenset({b"POST", b"PUT", b"PATCH"})

# Every error httpcore raises for a request on the wire (it has no common base class).
_TRANSPORT_ERRORS = (
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.TimeoutException,
    httpcore.UnsupportedProtocol,
    httpcore.ProxyError,
)


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


_OriginKey = tuple[bytes, bytes, int]


class _Connection(httpcore.AsyncHTTP11Connection):
    """httpcore's HTTP/1.1 connection with an asyncio lock around its state.

    httpcore's own lock is anyio's, whose every acquisition yields to the event loop once (a
    cancellation checkpoint), twice per request. The pool hands a connection to one request at
    a time, so the lock is never contended; asyncio's takes a free lock without yielding.
    """

    def __init__(
        self, origin: httpcore.Origin, stream: httpcore.AsyncNetworkStream, keepalive: float
    ) -> None:
        super().__init__(origin, stream, keepalive)
        self._state_lock = asyncio.Lock()  # type: ignore[assignment]


# The common URL that needs no normalisation (an ASCII name host, an optional port, a path and
# query of characters httpx.URL would keep as they are): parsed without httpx.URL's cost.
_PLAIN_URL = re.compile(
    r"(https?)://([A-Za-z0-9](?:[A-Za-z0-9.\-]*[A-Za-z0-9])?)(?::([0-9]{1,5}))?"
    r"((?:/(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})*)?"
    r"(?:\?(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2})*)?)"
)
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _plain_host(host: str) -> bool:
    """A host name httpx.URL keeps as is (lowercased): not number-like, or a canonical IPv4."""
    if not host[-1].isdigit():
        return True
    try:
        return str(ipaddress.IPv4Address(host)) == host
    except ValueError:
        return False


class UpstreamTarget:
    """Where a URL sends a request: the origin to connect to, `Host`, the request target.

    Parsed once per call (by `Router.prepare`, or by `UpstreamClient.stream` when the request
    comes without one); `origin_text` and `path` are what the call's log line shows.
    """

    __slots__ = (
        "default_port",
        "host",
        "key",
        "netloc",
        "origin",
        "port",
        "scheme",
        "target",
        "url",
    )

    def __init__(self, url: str) -> None:
        """Raises httpx.InvalidURL or httpcore.UnsupportedProtocol for a URL it cannot send to."""
        self.url = url
        plain = _PLAIN_URL.fullmatch(url)
        if plain is not None and _plain_host(plain.group(2)):
            scheme, host, raw_port, target = plain.groups()
            host = host.lower()
            default = _DEFAULT_PORTS[scheme]
            port = default if raw_port is None else int(raw_port)
            if 0 < port < 65536:
                self._set(scheme, host, port, port == default, target or "/")
                return
        # httpx.URL does what a client must: IDNA hosts, percent-encoding, default ports.
        parsed = httpx.URL(url)
        if parsed.scheme not in ("http", "https"):
            raise httpcore.UnsupportedProtocol(f"unsupported scheme {parsed.scheme!r}")
        if not parsed.raw_host:
            raise httpcore.UnsupportedProtocol("the URL has no host")
        port = parsed.port or _DEFAULT_PORTS[parsed.scheme]
        self.scheme = parsed.scheme
        self.host = parsed.host
        self.port = port
        self.default_port = parsed.port is None
        self.origin = httpcore.Origin(parsed.raw_scheme, parsed.raw_host, port)
        self.key: _OriginKey = (parsed.raw_scheme, parsed.raw_host, port)
        self.netloc = parsed.netloc
        self.target = parsed.raw_path

    def _set(self, scheme: str, host: str, port: int, default_port: bool, target: str) -> None:
        raw_host = host.encode("ascii")
        self.scheme = scheme
        self.host = host
        self.port = port
        self.default_port = default_port
        self.origin = httpcore.Origin(scheme.encode("ascii"), raw_host, port)
        self.key = (self.origin.scheme, raw_host, port)
        self.netloc = raw_host if default_port else b"%s:%d" % (raw_host, port)
        self.target = target.encode("ascii")

    def __repr__(self) -> str:
        return f"UpstreamTarget({self.origin_text!r})"  # no path or query: they may hold secrets

    @property
    def origin_text(self) -> str:
        """`scheme://host`, with `:port` when it is not the scheme's default."""
        port = "" if self.default_port else f":{self.port}"
        return f"{self.scheme}://{self.host}{port}"

    @property
    def path(self) -> str:
        """The path, percent-decoded, without the query."""
        return unquote(self.target.partition(b"?")[0].decode("ascii"))


@dataclass(frozen=True)
class UpstreamRequest:
    """One request to send upstream (headers are already final: substituted and filtered).

    `target` is `url` already parsed, when the caller has it.
    """

    method: str
    url: str
    headers: Sequence[tuple[str, str]] = field(repr=False)
    body: bytes = field(default=b"", repr=False)
    target: UpstreamTarget | None = field(default=None, repr=False, compare=False)


class _Wait:
    """Whether a call waits for room in a full pool (left set if the wait is cut short)."""

    __slots__ = ("for_room",)

    def __init__(self) -> None:
        self.for_room = False


class _ConnectionPool:
    """HTTP/1.1 connections per origin, most recently used first.

    Only the connection about to be reused is checked (closed, keep-alive expired, or readable
    while idle, which means the server closed it), so a call costs O(1) whatever the pool size;
    the other idle connections are swept at most once a second.
    """

    def __init__(
        self,
        backend: httpcore.AsyncNetworkBackend,
        ssl_context: ssl.SSLContext,
        *,
        max_connections: int,
        max_keepalive: int,
        keepalive_expiry: float,
    ) -> None:
        self._backend = backend
        self._ssl_context = ssl_context
        self._ssl_context.set_alpn_protocols(["http/1.1"])
        self._max_connections = max_connections
        self._max_keepalive = max_keepalive
        self._keepalive_expiry = keepalive_expiry
        self._idle: dict[_OriginKey, list[httpcore.AsyncHTTP11Connection]] = {}
        self._idle_count = 0
        self._open = 0  # connections counted against max_connections (in use, idle, opening)
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._next_sweep = 0.0
        self._closed = False

    def _reusable(self, key: _OriginKey) -> httpcore.AsyncHTTP11Connection | None:
        """An idle connection to `key`'s origin that is still good, or None; drops bad ones."""
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            self._idle_count -= 1
            if connection.is_available() and not connection.has_expired():
                return connection
            self._forget(connection)
        return None

    async def acquire(
        self, target: UpstreamTarget, connect_timeout: float, wait: _Wait
    ) -> httpcore.AsyncHTTP11Connection:
        """A connection to `target`'s origin: a checked idle one, or a new one; waits while
        the pool is full (the caller bounds the wait; `wait.for_room` says it is waiting)."""
        while True:
            connection = self._reusable(target.key)
            if connection is not None:
                return connection
            if self._open < self._max_connections:
                break
            if self._idle_count:  # full of idle connections to other origins: drop one
                self._drop_one_idle()
                break
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            wait.for_room = True  # left set if the wait is cut short
            try:
                await waiter
            except BaseException:
                if waiter.done():  # woken, then cut short: pass the turn on
                    self._wake()
                else:
                    waiter.cancel()
                raise
            wait.for_room = False
        self._open += 1
        try:
            return await self._connect(target.origin, target.host, connect_timeout)
        except BaseException:
            self._open -= 1
            self._wake()
            raise

    async def _connect(
        self, origin: httpcore.Origin, host: str, timeout: float
    ) -> httpcore.AsyncHTTP11Connection:
        stream = await self._backend.connect_tcp(
            origin.host.decode("ascii"), origin.port, timeout=timeout
        )
        try:
            if origin.scheme == b"https":
                stream = await stream.start_tls(
                    self._ssl_context, server_hostname=host, timeout=timeout
                )
        except BaseException:
            await stream.aclose()
            raise
        return _Connection(origin, stream, self._keepalive_expiry)

    async def release(self, key: _OriginKey, connection: httpcore.AsyncHTTP11Connection) -> None:
        """Take back a connection whose response is closed: keep it idle, or close it."""
        if not self._closed and connection.is_idle() and self._idle_count < self._max_keepalive:
            self._idle.setdefault(key, []).append(connection)
            self._idle_count += 1
            self._wake()
        else:
            self._forget(connection)
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + 1.0
            self._sweep()

    def _forget(self, connection: httpcore.AsyncHTTP11Connection) -> None:
        """Stop counting `connection` and close it (in the background: it may still have a
        socket to close)."""
        self._open -= 1
        self._wake()
        if not connection.is_closed():
            _close_soon(connection)

    def _drop_one_idle(self) -> None:
        for idle in self._idle.values():
            if idle:
                self._idle_count -= 1
                self._forget(idle.pop(0))
                return

    def _sweep(self) -> None:
        """Close idle connections that expired or that the server closed."""
        for key, idle in list(self._idle.items()):
            keep = [c for c in idle if c.is_available() and not c.has_expired()]
            for connection in idle:
                if connection not in keep:
                    self._idle_count -= 1
                    self._forget(connection)
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def aclose(self) -> None:
        self._closed = True
        idle = [c for connections in self._idle.values() for c in connections]
        self._idle.clear()
        self._idle_count = 0
        for connection in idle:
            self._open -= 1
            await connection.aclose()


_closing: set[asyncio.Task[None]] = set()


def _close_soon(connection: httpcore.AsyncHTTP11Connection) -> None:
    task = asyncio.ensure_future(connection.aclose())
    _closing.add(task)
    task.add_done_callback(_closing.discard)


class UpstreamResponse:
    """The upstream's head, and its body as an async iterator of raw chunks."""

    def __init__(self, response: httpcore.Response, release: _Release) -> None:
        self._response = response
        self._release = release
        self.status = response.status
        self.bytes_received = 0
        self.chunks_received = 0
        self.headers = downstream_response_headers(
            (name.decode("latin-1"), value.decode("latin-1")) for name, value in response.headers
        )

    def __repr__(self) -> str:
        return f"UpstreamResponse(status={self.status})"

    async def chunks(self) -> AsyncIterator[bytes]:
        """Each piece of the body as it arrives; UpstreamUnavailable if the connection drops."""
        try:
            async for chunk in self._response.aiter_stream():
                if chunk:
                    self.bytes_received += len(chunk)
                    self.chunks_received += 1
                    yield chunk
        except _TRANSPORT_ERRORS:
            raise UpstreamUnavailable("the upstream connection was lost mid-response") from None

    def abort(self) -> None:
        """Close the upstream connection soon, from a callback (e.g. the RPC was cancelled)."""
        if not self._release.done:
            task = asyncio.ensure_future(self._release.close(self._response))
            _closing.add(task)
            task.add_done_callback(_closing.discard)


class _Release:
    """Closes one response and gives its connection back to the pool, once."""

    __slots__ = ("_connection", "_key", "_pool", "done")

    def __init__(
        self, pool: _ConnectionPool, key: _OriginKey, connection: httpcore.AsyncHTTP11Connection
    ) -> None:
        self._pool = pool
        self._key = key
        self._connection = connection
        self.done = False

    async def close(self, response: httpcore.Response | None) -> None:
        if self.done:
            return
        self.done = True
        try:
            if response is not None:
                # Closing a response not read to its end closes the connection (httpcore).
                await response.aclose()
        finally:
            await self._pool.release(self._key, self._connection)


def _ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """httpx's default context (certifi's CAs), or one trusting only `ca_file`."""
    if ca_file is None:
        return httpx.create_ssl_context()
    return ssl.create_default_context(cafile=ca_file)


class UpstreamClient:
    """A pool of HTTP/1.1 connections whose every connection passes the egress policy."""

    def __init__(
        self,
        policy: EgressPolicy,
        *,
        resolver: Resolver = system_resolver,
        connect_timeout: float = 10.0,
        network_backend: httpcore.AsyncNetworkBackend | None = None,
        ca_file: str | None = None,
        max_connections: int = 1000,
        max_keepalive: int = 100,
        keepalive_expiry: float = 60.0,
    ) -> None:
        self._connect_timeout = connect_timeout
        self.backend = EgressNetworkBackend(policy, resolver, network_backend)
        # No proxy is ever used (an HTTP(S)_PROXY variable must not route around the egress
        # policy), no cookie is kept (the client is shared by every user's calls) and no
        # redirect is followed: this client has none of those features.
        self._pool = _ConnectionPool(
            self.backend,
            _ssl_context(ca_file),
            max_connections=max_connections,
            max_keepalive=max_keepalive,
            keepalive_expiry=keepalive_expiry,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()

    async def checked_addresses(self, host: str, port: int, *, deadline: float) -> list[str]:
        """The addresses a connection to `host:port` would try, resolved and checked exactly
        as a connection does it, within the connect timeout; nothing is sent.

        Raises:
            EgressRefused: the policy refuses one of them.
            httpcore.ConnectError, httpcore.ConnectTimeout: the name did not resolve (in time).
        """
        remaining = deadline - asyncio.get_running_loop().time()
        timeout = max(0.0, min(self._connect_timeout, remaining))
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
        wait = _Wait()
        response: httpcore.Response | None = None
        try:
            async with asyncio.timeout_at(deadline):
                try:
                    target = request.target or UpstreamTarget(request.url)
                    method = request.method.encode("ascii")
                    outgoing = httpcore.Request(
                        method,
                        httpcore.URL(
                            scheme=target.origin.scheme,
                            host=target.origin.host,
                            port=target.origin.port,
                            target=target.target,
                        ),
                        headers=_wire_headers(target.netloc, method, request.headers, request.body),
                        content=request.body,
                    )
                    connection = await self._pool.acquire(target, connect, wait)
                    release = _Release(self._pool, target.key, connection)
                    response = await connection.handle_async_request(outgoing)
                except httpcore.ConnectTimeout:
                    if connect < remaining:
                        raise UpstreamUnavailable(
                            f"the upstream did not accept a connection within {connect:g} s"
                        ) from None
                    raise UpstreamTimeout("the call's deadline passed while connecting") from None
                except httpcore.TimeoutException:
                    raise UpstreamTimeout("the upstream did not answer in time") from None
                except (*_TRANSPORT_ERRORS, httpx.InvalidURL) as err:
                    raise UpstreamUnavailable(_describe(err, request.url)) from None
                yield UpstreamResponse(response, release)
        except TimeoutError:
            if wait.for_room:
                raise UpstreamTimeout(
                    "every upstream connection of the router stayed busy until the deadline"
                ) from None
            raise UpstreamTimeout(
                "the upstream did not finish before the call's deadline"
            ) from None
        finally:
            if release is not None:
                await release.close(response)


def _describe(err: Exception, url: str) -> str:
    """A public description of a transport error (the URL holds no secret: no query)."""
    try:
        host = httpx.URL(url).host
    except httpx.InvalidURL:
        host = "(invalid URL)"
    if isinstance(err, httpcore.ConnectError):
        return f"could not connect to the upstream {host}"
    if isinstance(err, httpcore.RemoteProtocolError):
        return f"the upstream {host} broke the HTTP protocol"
    return f"the connection to the upstream {host} failed"
