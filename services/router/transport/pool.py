"""The connection pool: httpcore HTTP/1.1 connections per origin, reused most recent first.

httpcore's own `AsyncConnectionPool` walks every pooled connection, polling each idle one's
socket, on every request and again on every response close (O(n^2) in the pool size through
a list built inside that loop). This pool checks only the connection it is about to reuse and
sweeps the others at most once a second; a full pool makes a call wait for room.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Coroutine
from typing import Any

import httpcore

from services.router.transport.target import OriginKey, UpstreamTarget


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
        # httpcore's private attribute (httpcore 1.0.9, pinned in pyproject.toml): if a later
        # httpcore renames it, this override is merely inert.
        self._state_lock = asyncio.Lock()  # type: ignore[assignment]


class PoolWait:
    """Whether a call waits for room in a full pool (left set if the wait is cut short), so
    that running out of time can be told apart from a slow upstream."""

    __slots__ = ("for_room",)

    def __init__(self) -> None:
        self.for_room = False


class ConnectionPool:
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
        self._idle: dict[OriginKey, list[httpcore.AsyncHTTP11Connection]] = {}
        self._idle_count = 0
        self._open = 0  # connections counted against max_connections (in use, idle, opening)
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._next_sweep = 0.0
        self._closed = False

    def _reusable(self, key: OriginKey) -> httpcore.AsyncHTTP11Connection | None:
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
        self, target: UpstreamTarget, connect_timeout: float, wait: PoolWait
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

    async def release(self, key: OriginKey, connection: httpcore.AsyncHTTP11Connection) -> None:
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
            close_in_background(connection.aclose())

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


def close_in_background(closing: Coroutine[Any, Any, None]) -> None:
    """Run `closing` as a task that is kept referenced until it is done."""
    task = asyncio.ensure_future(closing)
    _closing.add(task)
    task.add_done_callback(_closing.discard)
