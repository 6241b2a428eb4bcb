"""Slow, silent and unresolvable upstreams (issue 14, items 5 and 6; SPEC 3.5): each is bounded
on its own, apart from the caller's deadline, and none of them holds up other users' calls."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import grpc
import grpc.aio
import pytest
from aicreds.router.v1 import router_pb2

from services.router.config import RouterSettings
from services.router.egress import EgressPolicy
from services.router.errors import UpstreamTimeout, UpstreamUnavailable, UpstreamUnresolved
from services.router.resolver import ThreadedResolver
from services.router.transport import UpstreamClient, UpstreamRequest
from tests.router.conftest import RouterFactory, provider
from tests.router.fake_vault import FakeVault
from tests.support.fake_upstream import FakeUpstream, RecordedRequest, Reply, running_upstream

LONG_DEADLINE = 60.0  # the caller's deadline: far beyond every bound under test


def _deadline(seconds: float = LONG_DEADLINE) -> float:
    return asyncio.get_running_loop().time() + seconds


async def _get(client: UpstreamClient, url: str, seconds: float = LONG_DEADLINE) -> bytes:
    async with client.stream(UpstreamRequest("GET", url, []), deadline=_deadline(seconds)) as r:
        return b"".join([chunk async for chunk in r.chunks()])


@pytest.fixture
async def healthy() -> AsyncIterator[FakeUpstream]:
    async with running_upstream() as server:
        yield server


@pytest.fixture
async def stuck() -> AsyncIterator[FakeUpstream]:
    """An upstream whose handler is replaced by each test to stall in some way."""
    async with running_upstream() as server:
        yield server


def _client(**options: object) -> UpstreamClient:
    return UpstreamClient(
        EgressPolicy.from_setting("127.0.0.1"),
        connect_timeout=2,
        **options,  # type: ignore[arg-type]
    )


async def _healthy_calls_while(
    client: UpstreamClient, healthy: FakeUpstream, stalled: asyncio.Future[Any]
) -> int:
    """Calls to the healthy upstream, one after another, until `stalled` is over."""
    done = 0
    while not stalled.done() or done == 0:
        assert await _get(client, healthy.base_url + "/ok", seconds=10)
        done += 1
    return done


async def test_a_silent_upstream_times_out_at_the_first_byte_bound(
    stuck: FakeUpstream, healthy: FakeUpstream
) -> None:
    async def silent(request: RecordedRequest, reply: Reply) -> None:
        await asyncio.sleep(LONG_DEADLINE)  # accepted the request, never answers

    stuck.handler = silent
    client = _client(first_byte_timeout=0.5)
    try:
        started = asyncio.get_running_loop().time()
        stalled = asyncio.ensure_future(_get(client, stuck.base_url + "/silent"))
        healthy_calls = await _healthy_calls_while(client, healthy, stalled)
        with pytest.raises(UpstreamTimeout, match="no answer within 0.5 s"):
            await stalled
        # Bounded by the first-byte timeout, not the caller's 60 s deadline (generously).
        assert asyncio.get_running_loop().time() - started < LONG_DEADLINE / 4
        assert healthy_calls >= 1
        await asyncio.wait_for(stuck.disconnected.wait(), timeout=5)  # connection closed
    finally:
        await client.aclose()


async def test_an_upstream_that_stalls_mid_body_times_out_at_the_idle_bound(
    stuck: FakeUpstream, healthy: FakeUpstream
) -> None:
    async def stalls(request: RecordedRequest, reply: Reply) -> None:
        await reply.head(200, [("content-type", "text/event-stream")])
        await reply.chunk(b"data: first\n\n")
        await asyncio.sleep(LONG_DEADLINE)

    stuck.handler = stalls
    client = _client(idle_timeout=0.5)
    received: list[bytes] = []

    async def read_stalled() -> None:
        request = UpstreamRequest("GET", stuck.base_url + "/stream", [])
        async with client.stream(request, deadline=_deadline()) as response:
            async for chunk in response.chunks():
                received.append(chunk)

    try:
        started = asyncio.get_running_loop().time()
        stalled = asyncio.ensure_future(read_stalled())
        healthy_calls = await _healthy_calls_while(client, healthy, stalled)
        with pytest.raises(UpstreamTimeout, match="sent nothing for 0.5 s"):
            await stalled
        assert asyncio.get_running_loop().time() - started < LONG_DEADLINE / 4
        assert received == [b"data: first\n\n"]
        assert healthy_calls >= 1
    finally:
        await client.aclose()


async def test_a_slow_but_steady_stream_is_not_cut_by_the_idle_bound(
    stuck: FakeUpstream,
) -> None:
    """The idle bound is per wait for more bytes, not for the whole body."""

    async def steady(request: RecordedRequest, reply: Reply) -> None:
        await reply.head(200, [])
        for n in range(6):
            await reply.chunk(f"{n}".encode())
            await asyncio.sleep(0.1)
        await reply.end()

    stuck.handler = steady
    client = _client(idle_timeout=2.0, first_byte_timeout=2.0)
    try:
        assert await _get(client, stuck.base_url + "/") == b"012345"
    finally:
        await client.aclose()


class HungLookup:
    """A blocking lookup (as getaddrinfo is) that never answers for `hung.test` until released;
    other names are loopback."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.hung_lookups = 0
        self._lock = threading.Lock()

    def __call__(self, host: str, port: int) -> Sequence[str]:
        if host == "hung.test":
            with self._lock:
                self.hung_lookups += 1
            self.release.wait(LONG_DEADLINE)
            raise OSError("released")
        return ["127.0.0.1"]


@pytest.fixture
def hung_lookup() -> Iterator[HungLookup]:
    lookup = HungLookup()
    yield lookup
    lookup.release.set()  # lets the resolver's threads end before the test run does


async def test_a_hung_resolver_for_one_host_does_not_block_another(
    healthy: FakeUpstream, hung_lookup: HungLookup
) -> None:
    resolver = ThreadedResolver(hung_lookup, max_threads=2)
    client = _client(resolver=resolver, resolve_timeout=0.5)
    try:
        # Many calls for the hung name: more than the resolver has threads.
        hung = [
            asyncio.ensure_future(_get(client, "http://hung.test/x", seconds=10)) for _ in range(8)
        ]
        await asyncio.sleep(0.05)
        body = await _get(client, f"http://good.test:{healthy.port}/ok", seconds=10)
        assert body
        results = await asyncio.gather(*hung, return_exceptions=True)
        for result in results:
            assert isinstance(result, UpstreamUnresolved)  # UNAVAILABLE, not a timeout
            assert "could not resolve the upstream hung.test" in result.message
        assert hung_lookup.hung_lookups == 1  # one lookup per name at a time, shared
        # And again, while the first lookup still hangs: still no second thread for it.
        with pytest.raises(UpstreamUnavailable):
            await _get(client, "http://hung.test/again", seconds=10)
        assert hung_lookup.hung_lookups == 1
        assert await _get(client, f"http://good.test:{healthy.port}/ok", seconds=10)
    finally:
        await client.aclose()
        resolver.close()


async def test_a_saturated_slow_origin_does_not_delay_another_origin(
    stuck: FakeUpstream, healthy: FakeUpstream
) -> None:
    gate = asyncio.Event()

    async def held(request: RecordedRequest, reply: Reply) -> None:
        await gate.wait()
        await reply.head(200, [("content-length", "2")])
        await reply.chunk(b"ok")
        await reply.end()

    stuck.handler = held
    # Four connections in all, two per origin: without the per-origin bound the slow origin's
    # calls would take all four and the healthy origin's call would wait with them.
    client = _client(max_connections=4, max_connections_per_origin=2, first_byte_timeout=30)
    try:
        slow = [asyncio.ensure_future(_get(client, stuck.base_url + "/slow")) for _ in range(8)]
        while len(stuck.requests) < 2:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        assert len(stuck.requests) == 2  # the others wait for one of the origin's two
        assert await _get(client, healthy.base_url + "/ok", seconds=10)
        assert not any(call.done() for call in slow)
        gate.set()
        assert await asyncio.gather(*slow) == [b"ok"] * 8
        assert len(stuck._tasks) <= 2  # never more than two connections to the slow origin
    finally:
        gate.set()
        await client.aclose()


async def test_waiting_for_a_busy_origin_gives_up_at_the_first_byte_bound(
    stuck: FakeUpstream,
) -> None:
    gate = asyncio.Event()

    async def held(request: RecordedRequest, reply: Reply) -> None:
        await reply.head(200, [("content-length", "2")])  # the head at once: the body is slow
        await gate.wait()
        await reply.chunk(b"ok")
        await reply.end()

    stuck.handler = held
    client = _client(max_connections_per_origin=1, first_byte_timeout=0.5)
    try:
        first = asyncio.ensure_future(_get(client, stuck.base_url + "/first"))
        while not stuck.requests:
            await asyncio.sleep(0.01)
        with pytest.raises(UpstreamTimeout, match="stayed busy"):
            await _get(client, stuck.base_url + "/second")
        assert len(stuck.requests) == 1
        gate.set()
        assert await first == b"ok"
    finally:
        gate.set()
        await client.aclose()


def test_the_bounds_are_settings() -> None:
    defaults = RouterSettings.from_env({})
    assert (defaults.connect_timeout, defaults.resolve_timeout) == (10.0, 5.0)
    assert (defaults.first_byte_timeout, defaults.idle_timeout) == (300.0, 120.0)
    assert defaults.max_connections_per_origin == 100
    chosen = RouterSettings.from_env(
        {
            "ROUTER_RESOLVE_TIMEOUT": "2",
            "ROUTER_UPSTREAM_FIRST_BYTE_TIMEOUT": "30",
            "ROUTER_UPSTREAM_IDLE_TIMEOUT": "15",
            "ROUTER_MAX_CONNECTIONS_PER_ORIGIN": "8",
        }
    )
    assert (chosen.resolve_timeout, chosen.first_byte_timeout, chosen.idle_timeout) == (2, 30, 15)
    assert chosen.max_connections_per_origin == 8
    with pytest.raises(ValueError, match="ROUTER_UPSTREAM_IDLE_TIMEOUT must be a positive"):
        RouterSettings.from_env({"ROUTER_UPSTREAM_IDLE_TIMEOUT": "0"})
    with pytest.raises(ValueError, match="ROUTER_MAX_CONNECTIONS_PER_ORIGIN must be at least 1"):
        RouterSettings.from_env({"ROUTER_MAX_CONNECTIONS_PER_ORIGIN": "0"})


async def test_a_silent_upstream_answers_deadline_exceeded_through_the_router(
    fake_vault: FakeVault, router_factory: RouterFactory, upstream: FakeUpstream
) -> None:
    env = await router_factory(fake_vault.address, fake_vault.token, first_byte_timeout=0.5)
    fake_vault.providers["user-1"] = [provider("p", upstream.base_url, {})]

    async def silent(request: RecordedRequest, reply: Reply) -> None:
        await asyncio.sleep(LONG_DEADLINE)

    upstream.handler = silent
    request = router_pb2.InvokeRequest(user_id="user-1", provider_name="p", method="GET", path="/")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await env.invoke(request, timeout=LONG_DEADLINE)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert ("x-error-reason", "upstream_timeout") in tuple(caught.value.trailing_metadata() or ())
    assert "no answer within 0.5 s" in (caught.value.details() or "")
