"""A real Redis server for tests: a key prefix of its own per use, its keys deleted afterwards.

The server is `AICREDS_TEST_REDIS` (a redis:// URL), by default the one this project's machines
run: `redis://127.0.0.1:6379/0`. When no server answers there, a test that needs it is skipped
with the reason, except under CI (`CI=true`), where it fails: CI never skips the Redis tests
(`.ci/run` starts the server).

    async with fresh_redis("limits") as (client, prefix):   # a client and an unused key prefix
        ...
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

from redis.asyncio import Redis

from services.gateway.redis_limits import open_redis
from services.gateway.redis_url import RedisUrl
from tests.support.missing import skip_or_fail
from tests.support.postgres import run_to_end

REDIS_URL = RedisUrl(os.environ.get("AICREDS_TEST_REDIS", "redis://127.0.0.1:6379/0"))


async def _ping() -> None:
    client = Redis.from_url(REDIS_URL.url, socket_connect_timeout=2, socket_timeout=2)
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
        return f"no Redis server at {REDIS_URL} ({type(err).__name__}: {err})"
    return None


def require_redis() -> None:
    """Skip the calling test when no server answers (fail under CI, which must run it)."""
    reason = unavailable_reason()
    if reason is not None:
        skip_or_fail("Redis tests", reason, "set AICREDS_TEST_REDIS")


def unique_prefix(label: str) -> str:
    """A key prefix no other test uses (`aicreds-test:<label>:<random>`)."""
    return f"aicreds-test:{label}:{secrets.token_hex(4)}"


async def delete_keys(client: Redis, prefix: str) -> None:
    """Delete every key under `prefix`."""
    keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
    if keys:
        await client.delete(*keys)


@asynccontextmanager
async def fresh_redis(label: str) -> AsyncIterator[tuple[Redis, str]]:
    """A client of the test server and an unused key prefix, whose keys are deleted after."""
    require_redis()
    client = open_redis(REDIS_URL)  # as a gateway's
    prefix = unique_prefix(label)
    try:
        yield client, prefix
    finally:
        await delete_keys(client, prefix)
        await client.aclose()


class RedisProxy:
    """A TCP relay on 127.0.0.1 to the test server that can be cut and restored, so a test can
    take "Redis" away from a gateway and give it back (on the same address) without touching
    the server other tests use.

        proxy = await RedisProxy.start()
        proxy.url            redis://127.0.0.1:<port>/<db>, as the test server's
        await proxy.stop()   connections refused, open ones closed
        await proxy.start_again()
    """

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._port = 0
        self._links: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    async def start(cls) -> RedisProxy:
        require_redis()
        proxy = cls()
        await proxy.start_again()
        return proxy

    @property
    def url(self) -> RedisUrl:
        path = urlsplit(REDIS_URL.url).path
        return RedisUrl(f"redis://127.0.0.1:{self._port}{path}")

    async def start_again(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self._port)
        self._port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._links):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parts = urlsplit(REDIS_URL.url)
        up_reader, up_writer = await asyncio.open_connection(parts.hostname, parts.port or 6379)
        self._links.update((writer, up_writer))
        pumps = [
            asyncio.create_task(_pump(reader, up_writer)),
            asyncio.create_task(_pump(up_reader, writer)),
        ]
        self._tasks.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
                self._tasks.discard(pump)
            for end in (writer, up_writer):
                end.close()
                self._links.discard(end)


async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()


@asynccontextmanager
async def redis_proxy() -> AsyncIterator[RedisProxy]:
    """A started `RedisProxy` (the server required), stopped on exit."""
    proxy = await RedisProxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()
