"""A real Redis server for tests, and a proxy in front of it that a test can cut and restore.

The server is `AICREDS_TEST_REDIS` (a redis:// URL), by default the one this project's machines
run: `redis://127.0.0.1:6379/0`. When none answers there, a test that needs it is skipped with
the reason, except under CI (`CI=true`), where it fails: CI never skips the Redis tests
(`.ci/run` starts the server). Tests share the server, so each uses names of its own
(`unique_name`).

    require_redis()
    async with redis_proxy() as proxy:       # proxy.url reaches the server while not cut
        await proxy.cut()                    # refuses and drops every connection: "Redis down"
        await proxy.restore()                # the same address answers again
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import secrets
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis

from tests.support.postgres import run_to_end

REDIS_URL = os.environ.get("AICREDS_TEST_REDIS", "redis://127.0.0.1:6379/0")


async def _ping() -> None:
    client = Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        await client.ping()
    finally:
        await client.aclose()


@functools.cache
def unavailable_reason() -> str | None:
    """Why no Redis server is usable for tests, or None when one is."""
    try:
        run_to_end(_ping())
    except Exception as err:  # noqa: BLE001 - any failure means "not usable here"
        where = urlsplit(REDIS_URL).hostname, urlsplit(REDIS_URL).port
        return f"no Redis server at {where[0]}:{where[1]} ({type(err).__name__})"
    return None


def require_redis() -> None:
    """Skip the calling test when no server answers (fail under CI, which must run it)."""
    reason = unavailable_reason()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"CI must run the Redis tests: {reason}")
    pytest.skip(f"Redis tests skipped: {reason} (set AICREDS_TEST_REDIS)")


def unique_name(label: str) -> str:
    """A key or channel name no other test uses."""
    return f"aicreds-test:{label}:{secrets.token_hex(6)}"


class RedisProxy:
    """A TCP proxy on 127.0.0.1 to the test server; `cut()` makes it look down."""

    def __init__(self) -> None:
        target = urlsplit(REDIS_URL)
        self._target = (target.hostname or "127.0.0.1", target.port or 6379)
        self._path = target.path
        self._server: asyncio.Server | None = None
        self._port = 0
        self._pumps: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self._port}{self._path}"

    async def restore(self) -> None:
        """Listen (again, on the same port) and forward every connection."""
        self._server = await asyncio.start_server(
            self._forward, "127.0.0.1", self._port, reuse_address=True
        )
        self._port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Stop listening and drop every open connection, as a stopped server would."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        for pump in list(self._pumps):
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            pump = asyncio.create_task(self._pump(source, sink))
            self._pumps.add(pump)
            pump.add_done_callback(self._pumps.discard)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            sink.transport.abort()
            self._writers.discard(sink)


@contextlib.asynccontextmanager
async def redis_proxy() -> AsyncIterator[RedisProxy]:
    """A started `RedisProxy` (the server required), cut on exit."""
    require_redis()
    proxy = RedisProxy()
    await proxy.restore()
    try:
        yield proxy
    finally:
        await proxy.cut()
