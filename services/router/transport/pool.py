"""The connection pool: HTTP/1.1 connections (`http11.py`) per origin, reused most recent first.

httpcore's own `AsyncConnectionPool` walks every pooled connection, polling each idle one's
socket, on every request and again on every response close (O(n^2) in the pool size through
a list built inside that loop). This pool checks only the connection it is about to reuse and
sweeps the others at most once a second; a full pool makes a call wait for room.

No origin may hold more than `max_per_origin` connections (in use, idle or opening;
`ROUTER_MAX_CONNECTIONS_PER_ORIGIN`): a call to an origin at its limit waits for one of that
origin's connections, so one slow or silent upstream cannot take the connections every other
upstream needs. Every wait for room is bounded (`wait_timeout`, the first-byte timeout).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Coroutine
from typing import Any

import httpcore

from services.router.transport.http11 import HTTP11Connection
from services.router.transport.target import OriginKey, UpstreamTarget


class PoolWait:
    """Whether a call waits for room in a full pool, or for a connection of an origin at its
    limit (left set if the wait is cut short), so that running out of time can be told apart
    from a slow upstream."""

    __slots__ = ("for_origin", "for_room")

    def __init__(self) -> None:
        self.for_room = False
        self.for_origin = False


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
        max_per_origin: int | None = None,
    ) -> None:
        self._backend = backend
        self._ssl_context = ssl_context
        self._ssl_context.set_alpn_protocols(["http/1.1"])
        self._max_connections = max_connections
        self._max_per_origin = max_per_origin or max_connections
        self._max_keepalive = max_keepalive
        self._keepalive_expiry = keepalive_expiry
        self._idle: dict[OriginKey, list[HTTP11Connection]] = {}
        self._idle_count = 0
        self._open = 0  # connections counted against max_connections (in use, idle, opening)
        self._open_to: dict[OriginKey, int] = {}  # the same, per origin
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._origin_waiters: dict[OriginKey, deque[asyncio.Future[None]]] = {}
        self._next_sweep = 0.0
        self._closed = False

    @property
    def in_use(self) -> int:
        """Connections carrying a request, or being opened for one."""
        return self._open - self._idle_count

    @property
    def idle(self) -> int:
        """Connections kept open for reuse."""
        return self._idle_count

    def _reusable(self, key: OriginKey) -> HTTP11Connection | None:
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
        self,
        target: UpstreamTarget,
        connect_timeout: float,
        wait: PoolWait,
        wait_timeout: float | None = None,
    ) -> HTTP11Connection:
        """A connection to `target`'s origin: a checked idle one, or a new one; waits while
        the pool is full or the origin is at its limit, at most `wait_timeout` seconds in all
        (TimeoutError; `wait` says what it waited for)."""
        key = target.key
        give_up = None if wait_timeout is None else asyncio.get_running_loop().time() + wait_timeout
        while True:
            connection = self._reusable(key)
            if connection is not None:
                return connection
            if self._open_to.get(key, 0) >= self._max_per_origin:
                wait.for_origin = True  # left set if the wait is cut short
                await self._wait_turn(self._origin_waiters.setdefault(key, deque()), give_up)
                wait.for_origin = False
                continue
            if self._open < self._max_connections:
                break
            if self._idle_count:  # full of idle connections to other origins: drop one
                self._drop_one_idle()
                break
            wait.for_room = True
            await self._wait_turn(self._waiters, give_up)
            wait.for_room = False
        self._open += 1
        self._open_to[key] = self._open_to.get(key, 0) + 1
        try:
            return await self._connect(key, target.origin, target.host, connect_timeout)
        except BaseException:
            self._uncount(key)
            raise

    async def _wait_turn(self, queue: deque[asyncio.Future[None]], give_up: float | None) -> None:
        waiter = asyncio.get_running_loop().create_future()
        queue.append(waiter)
        try:
            async with asyncio.timeout_at(give_up):
                await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():  # woken, then cut short: pass it on
                self._wake_one(queue)
            else:
                waiter.cancel()
            raise

    def _uncount(self, key: OriginKey) -> None:
        """One connection to `key`'s origin is gone: make room for a waiting call."""
        self._open -= 1
        left = self._open_to.get(key, 0) - 1
        if left > 0:
            self._open_to[key] = left
        else:
            self._open_to.pop(key, None)
        waiters = self._origin_waiters.get(key)
        if not (waiters and self._wake_one(waiters)):
            self._wake()
        if waiters is not None and not waiters:
            del self._origin_waiters[key]

    async def _connect(
        self, key: OriginKey, origin: httpcore.Origin, host: str, timeout: float
    ) -> HTTP11Connection:
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
        return HTTP11Connection(key, stream, self._keepalive_expiry)

    async def release(self, key: OriginKey, connection: HTTP11Connection) -> None:
        """Take back a connection whose response is closed: keep it idle, or close it."""
        if not self._closed and connection.is_idle() and self._idle_count < self._max_keepalive:
            self._idle.setdefault(key, []).append(connection)
            self._idle_count += 1
            # A call waiting for this origin takes it; otherwise one waiting for room.
            waiters = self._origin_waiters.get(key)
            if not (waiters and self._wake_one(waiters)):
                self._wake()
        else:
            self._forget(connection)
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + 1.0
            self._sweep()

    def _forget(self, connection: HTTP11Connection) -> None:
        """Stop counting `connection` and close it (in the background: it may still have a
        socket to close)."""
        self._uncount(connection.key)
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
        self._wake_one(self._waiters)

    @staticmethod
    def _wake_one(queue: deque[asyncio.Future[None]]) -> bool:
        """Wake the first call still waiting in `queue`; whether there was one."""
        while queue:
            waiter = queue.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return True
        return False

    async def aclose(self) -> None:
        self._closed = True
        idle = [c for connections in self._idle.values() for c in connections]
        self._idle.clear()
        self._idle_count = 0
        for connection in idle:
            self._open -= 1
            self._open_to.pop(connection.key, None)
            await connection.aclose()


_closing: set[asyncio.Task[None]] = set()


def close_in_background(closing: Coroutine[Any, Any, None]) -> None:
    """Run `closing` as a task that is kept referenced until it is done."""
    task = asyncio.ensure_future(closing)
    _closing.add(task)
    task.add_done_callback(_closing.discard)
