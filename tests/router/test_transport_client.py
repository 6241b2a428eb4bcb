"""The upstream client against a real local HTTP server: streaming, cancel, time, errors."""

from __future__ import annotations

import asyncio
import gzip
import socket
from collections.abc import AsyncIterator

import pytest

from services.router.egress import EgressPolicy
from services.router.errors import UpstreamTimeout, UpstreamUnavailable
from services.router.transport import UpstreamClient, UpstreamRequest
from tests.support.fake_upstream import (
    FakeUpstream,
    RecordedRequest,
    Reply,
    running_upstream,
    sse_event,
)


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with running_upstream() as server:
        yield server


@pytest.fixture
async def client() -> AsyncIterator[UpstreamClient]:
    client = UpstreamClient(EgressPolicy.from_setting("127.0.0.1"), connect_timeout=2)
    yield client
    await client.aclose()


def _deadline(seconds: float) -> float:
    return asyncio.get_running_loop().time() + seconds


async def test_request_arrives_exactly(upstream: FakeUpstream, client: UpstreamClient) -> None:
    body = b'{"model":"gpt-4o","messages":[]}'
    request = UpstreamRequest(
        "POST",
        upstream.base_url + "/v1/chat/completions?api-version=2024-01",
        [("Authorization", "Bearer sk-x"), ("X-Multi", "a"), ("X-Multi", "b")],
        body,
    )
    async with client.stream(request, deadline=_deadline(5)) as response:
        assert response.status == 200
        received = b"".join([c async for c in response.chunks()])
    assert b"chat/completions" in received
    (seen,) = upstream.requests
    assert seen.method == "POST"
    assert seen.target == "/v1/chat/completions?api-version=2024-01"
    assert seen.body == body
    assert seen.header("authorization") == "Bearer sk-x"
    assert seen.header_values("x-multi") == ["a", "b"]
    assert seen.header("accept-encoding") == "identity"


async def test_error_status_and_headers_pass_through(
    upstream: FakeUpstream, client: UpstreamClient
) -> None:
    async def rate_limited(request: RecordedRequest, reply: Reply) -> None:
        await reply.head(
            429,
            [
                ("content-type", "application/json"),
                ("retry-after", "7"),
                ("connection", "keep-alive"),
                ("transfer-encoding", "chunked"),
            ],
        )
        await reply.chunk(b'{"error":{"type":"rate_limit"}}')
        await reply.end()

    upstream.handler = rate_limited
    async with client.stream(
        UpstreamRequest("POST", upstream.base_url + "/v1/x", []), deadline=_deadline(5)
    ) as response:
        body = b"".join([c async for c in response.chunks()])
    assert response.status == 429
    assert response.headers == [("content-type", "application/json"), ("retry-after", "7")]
    assert body == b'{"error":{"type":"rate_limit"}}'


async def test_compressed_bodies_pass_raw_with_their_encoding(
    upstream: FakeUpstream, client: UpstreamClient
) -> None:
    compressed = gzip.compress(b"hello " * 100)

    async def gzipped(request: RecordedRequest, reply: Reply) -> None:
        await reply.head(
            200, [("content-encoding", "gzip"), ("content-length", str(len(compressed)))]
        )
        await reply.chunk(compressed)
        await reply.end()

    upstream.handler = gzipped
    async with client.stream(
        UpstreamRequest("GET", upstream.base_url + "/", [("Accept-Encoding", "gzip")]),
        deadline=_deadline(5),
    ) as response:
        body = b"".join([c async for c in response.chunks()])
    assert ("content-encoding", "gzip") in response.headers
    assert body == compressed
    assert upstream.requests[0].header_values("accept-encoding") == ["gzip"]


async def test_chunks_are_forwarded_as_they_arrive(
    upstream: FakeUpstream, client: UpstreamClient
) -> None:
    gate = asyncio.Event()

    async def streaming(request: RecordedRequest, reply: Reply) -> None:
        await reply.head(200, [("content-type", "text/event-stream")])
        await reply.chunk(sse_event(0))
        await gate.wait()  # only opened once the first event reached the caller
        for n in range(1, 50):
            await reply.chunk(sse_event(n))
        await reply.end()

    upstream.handler = streaming
    async with client.stream(
        UpstreamRequest("POST", upstream.base_url + "/v1/chat/completions", []),
        deadline=_deadline(10),
    ) as response:
        chunks = response.chunks()
        first = await anext(chunks)
        assert first == sse_event(0)
        gate.set()
        rest = b"".join([c async for c in chunks])
    assert first + rest == b"".join(sse_event(n) for n in range(50))


async def test_leaving_mid_stream_closes_the_upstream_connection(
    upstream: FakeUpstream, client: UpstreamClient
) -> None:
    async def endless(request: RecordedRequest, reply: Reply) -> None:
        await reply.head(200, [("content-type", "text/event-stream")])
        await reply.chunk(sse_event(0))
        await asyncio.Event().wait()

    upstream.handler = endless

    async def consume() -> None:
        async with client.stream(
            UpstreamRequest("POST", upstream.base_url + "/", []), deadline=_deadline(30)
        ) as response:
            async for _ in response.chunks():
                pass

    task = asyncio.ensure_future(consume())
    while not upstream.requests:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(upstream.disconnected.wait(), timeout=1)


async def test_slow_upstream_runs_out_of_time(
    upstream: FakeUpstream, client: UpstreamClient
) -> None:
    async def slow(request: RecordedRequest, reply: Reply) -> None:
        await asyncio.sleep(10)

    upstream.handler = slow
    with pytest.raises(UpstreamTimeout):
        async with client.stream(
            UpstreamRequest("GET", upstream.base_url + "/", []), deadline=_deadline(0.3)
        ):
            pass
    await asyncio.wait_for(upstream.disconnected.wait(), timeout=1)


async def test_deadline_also_bounds_a_slow_body(
    upstream: FakeUpstream, client: UpstreamClient
) -> None:
    async def stalls(request: RecordedRequest, reply: Reply) -> None:
        await reply.head(200, [])
        await reply.chunk(b"first")
        await asyncio.sleep(10)

    upstream.handler = stalls
    received: list[bytes] = []
    with pytest.raises(UpstreamTimeout):
        async with client.stream(
            UpstreamRequest("GET", upstream.base_url + "/", []), deadline=_deadline(0.3)
        ) as response:
            async for chunk in response.chunks():
                received.append(chunk)
    assert received == [b"first"]


async def test_refused_connection_is_unavailable(client: UpstreamClient) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(UpstreamUnavailable, match="could not connect"):
        async with client.stream(
            UpstreamRequest("GET", f"http://127.0.0.1:{port}/", []), deadline=_deadline(5)
        ):
            pass


async def test_connections_are_reused(upstream: FakeUpstream, client: UpstreamClient) -> None:
    for _ in range(3):
        async with client.stream(
            UpstreamRequest("GET", upstream.base_url + "/", []), deadline=_deadline(5)
        ) as response:
            async for _ in response.chunks():
                pass
    assert len(upstream.requests) == 3
    assert len(upstream._tasks) == 1  # one keep-alive connection served all three


async def test_no_cookie_from_one_call_reaches_the_next(
    upstream: FakeUpstream, client: UpstreamClient
) -> None:
    """The client is shared by every user: a Set-Cookie answered to one call (user A) must
    never be sent on a later call (user B) to the same host."""

    async def sets_a_cookie(request: RecordedRequest, reply: Reply) -> None:
        await reply.head(
            200,
            [("set-cookie", "session=user-a-secret; Path=/"), ("content-length", "2")],
        )
        await reply.chunk(b"ok")
        await reply.end()

    upstream.handler = sets_a_cookie
    for _ in range(2):
        request = UpstreamRequest("GET", upstream.base_url + "/v1/models", [], b"")
        async with client.stream(request, deadline=_deadline(5)) as response:
            assert response.status == 200
            _ = [c async for c in response.chunks()]
    first, second = upstream.requests
    assert first.header("cookie") is None
    assert second.header("cookie") is None


async def test_a_connection_the_upstream_closed_while_idle_is_not_reused(
    upstream: FakeUpstream, client: UpstreamClient
) -> None:
    async def answers_then_closes(request: RecordedRequest, reply: Reply) -> None:
        await reply.head(200, [("content-length", "2")])  # no `Connection: close`
        await reply.chunk(b"ok")
        await reply.end()
        reply.close()  # the client's idle keep-alive connection is now stale

    upstream.handler = answers_then_closes

    async def get() -> int:
        request = UpstreamRequest("GET", upstream.base_url + "/", [])
        async with client.stream(request, deadline=_deadline(5)) as response:
            _ = [c async for c in response.chunks()]
            return response.status

    assert await get() == 200
    await asyncio.sleep(0.05)
    assert await get() == 200
    assert len(upstream.requests) == 2


async def test_a_full_pool_makes_calls_wait_for_a_connection(upstream: FakeUpstream) -> None:
    gate = asyncio.Event()

    async def held(request: RecordedRequest, reply: Reply) -> None:
        await gate.wait()
        await reply.head(200, [("content-length", "2")])
        await reply.chunk(b"ok")
        await reply.end()

    upstream.handler = held
    client = UpstreamClient(
        EgressPolicy.from_setting("127.0.0.1"), connect_timeout=2, max_connections=1
    )

    async def get(seconds: float) -> bytes:
        request = UpstreamRequest("GET", upstream.base_url + "/", [])
        async with client.stream(request, deadline=_deadline(seconds)) as response:
            return b"".join([c async for c in response.chunks()])

    try:
        first = asyncio.ensure_future(get(5))
        while not upstream.requests:
            await asyncio.sleep(0.01)
        second = asyncio.ensure_future(get(5))
        await asyncio.sleep(0.05)
        with pytest.raises(UpstreamTimeout, match="busy"):
            await get(0.2)
        gate.set()
        assert await first == b"ok"
        assert await second == b"ok"
        assert len(upstream.requests) == 2
        assert len(upstream._tasks) == 1  # the second call waited for the first's connection
    finally:
        await client.aclose()
