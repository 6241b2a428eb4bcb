"""Review of buffered calls on `InvokeBufferedStream`s: the races the first tests did not show.

- a cancel the router reads before the call's task ran still gets its answer and frees its place;
- a call the gateway gave up on while it still waited in the stream's outbox is never written
  (it would reach the upstream, which may cost money, for nobody);
- a draining router still hears the gateway's cancels of the calls it runs;
- a stream that breaks while the gateway writes on it fails its calls with UNAVAILABLE, as a
  unary call on a broken connection does, not with grpc.aio's INTERNAL (500 instead of 503).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack

import grpc
import grpc.aio
import pytest
from aicreds.router.v1 import router_pb2 as pb

from services.gateway.router_streams import RouterStreams
from services.router.buffered_stream import answer_invoke_stream
from tests.router.conftest import RouterEnv, RouterFactory
from tests.router.fake_vault import FakeVault
from tests.router.invoke_requests import (
    HeldReply,
    gateway_streams,
    invoke_request,
    one_by_one,
    router_server,
    serving,
    setup_openai,
    status_of_call,
)
from tests.support.fake_upstream import FakeUpstream, RecordedRequest, Reply, echo_handler


def _buffered(**fields: object) -> pb.InvokeBufferedRequest:
    return pb.InvokeBufferedRequest(call=invoke_request(**fields))


def _call(ident: int) -> pb.InvokeBufferedStreamRequest:
    return pb.InvokeBufferedStreamRequest(id=ident, call=_buffered(), timeout_ms=10_000)


# -- the router's side alone ----------------------------------------------------------------------


async def test_a_cancel_read_before_its_call_ran_is_answered_and_frees_the_place() -> None:
    async def requests() -> AsyncIterator[pb.InvokeBufferedStreamRequest]:
        # The call and its cancel arrive together: the cancel is read before the call's task ran.
        yield _call(1)
        yield pb.InvokeBufferedStreamRequest(id=1, cancel=True)
        yield _call(2)

    async def invoke(
        request: pb.InvokeBufferedRequest, timeout: float | None
    ) -> pb.InvokeBufferedResponse:
        return pb.InvokeBufferedResponse(head=pb.ResponseHead(status=200))

    answers = one_by_one(answer_invoke_stream(requests(), invoke, max_in_flight=1))
    first = await asyncio.wait_for(anext(answers), timeout=5)
    assert first.id == 1 and first.error.code == grpc.StatusCode.CANCELLED.value[0]
    second = await asyncio.wait_for(anext(answers), timeout=5)  # its place was freed
    assert second.id == 2 and second.response.head.status == 200
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(answers), timeout=5)


# -- the gateway against a real router -----------------------------------------------------------


async def test_a_draining_router_still_hears_the_cancel_of_a_call_it_runs(
    fake_vault: FakeVault, fake_env: RouterEnv, upstream: FakeUpstream
) -> None:
    setup_openai(fake_vault, upstream, {})
    upstream.handler = held = HeldReply()
    streams = gateway_streams(fake_env, streams=1)
    stopping: asyncio.Future[None] | None = None
    try:
        call = streams.start(_buffered(), 30)
        assert call is not None
        await asyncio.wait_for(held.started.wait(), timeout=5)
        stopping = asyncio.ensure_future(fake_env.router.stop(grace=30))
        await asyncio.sleep(0.2)  # the gateway has had `draining`
        assert call.cancel()  # the client went away
        # As for a unary call: the router closes the upstream request at once.
        await asyncio.wait_for(upstream.disconnected.wait(), timeout=5)
        await asyncio.wait_for(stopping, timeout=10)
    finally:
        held.release.set()
        upstream.handler = echo_handler
        await streams.aclose()
        if stopping is not None:
            await asyncio.wait_for(stopping, timeout=40)


# -- the gateway against a fake router --------------------------------------------


class _FakeRouter:
    """A router whose streams count the calls they read and answer each 200, or, with
    `break_after`, read that many calls and then end UNAVAILABLE, as a router that dies does,
    while the gateway is still writing, or without `answer` accept and never answer (a router
    that hangs). Its unary calls answer 200."""

    def __init__(self, break_after: int | None = None, answer: bool = True) -> None:
        self.calls_read = 0
        self._break_after = break_after
        self._answer = answer
        self._server, self.port = router_server(
            {
                "InvokeBufferedStream": grpc.stream_stream_rpc_method_handler(
                    self._stream,
                    pb.InvokeBufferedStreamRequest.FromString,
                    pb.InvokeBufferedStreamResponse.SerializeToString,
                ),
                "InvokeBuffered": grpc.unary_unary_rpc_method_handler(
                    self._unary,
                    pb.InvokeBufferedRequest.FromString,
                    pb.InvokeBufferedResponse.SerializeToString,
                ),
            }
        )

    async def _unary(
        self, request: pb.InvokeBufferedRequest, context: grpc.aio.ServicerContext
    ) -> pb.InvokeBufferedResponse:
        return pb.InvokeBufferedResponse(head=pb.ResponseHead(status=200))

    async def _counted(
        self,
        requests: AsyncIterator[pb.InvokeBufferedStreamRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.InvokeBufferedStreamRequest]:
        async for message in requests:
            if message.HasField("call"):
                self.calls_read += 1
                if self.calls_read == self._break_after:
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "gone")
            yield message

    async def _stream(
        self,
        requests: AsyncIterator[pb.InvokeBufferedStreamRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.InvokeBufferedStreamResponse]:
        await context.send_initial_metadata(())
        if not self._answer:
            await asyncio.sleep(3600)
        async for answer in answer_invoke_stream(
            self._counted(requests, context), lambda r, t: self._unary(r, context)
        ):
            yield answer


@pytest.fixture
async def fake_router() -> AsyncIterator[
    Callable[..., Awaitable[tuple[_FakeRouter, RouterStreams]]]
]:
    async with AsyncExitStack() as stack:

        async def make(
            break_after: int | None = None, answer: bool = True, max_age: float = 60
        ) -> tuple[_FakeRouter, RouterStreams]:
            router = _FakeRouter(break_after, answer)
            streams = await stack.enter_async_context(
                serving(router._server, router.port, streams=1, max_age=max_age)
            )
            return router, streams

        yield make


async def test_a_call_given_up_on_before_it_was_written_never_reaches_the_router(
    fake_router: Callable[..., Awaitable[tuple[_FakeRouter, RouterStreams]]],
) -> None:
    router, streams = await fake_router()
    gone = streams.start(_buffered(), 10)
    assert gone is not None
    assert gone.cancel()  # the client left at once: its message still waits in the outbox
    late = streams.start(_buffered(), 0.000_001)  # its deadline passes in the outbox
    assert late is not None
    kept = streams.start(_buffered(), 10)
    assert await status_of_call(kept) == grpc.StatusCode.OK
    assert await status_of_call(late) == grpc.StatusCode.DEADLINE_EXCEEDED
    # Neither would have been answered to anyone: neither may reach an upstream.
    assert router.calls_read == 1
    assert streams.start(_buffered(), 10) is not None  # and their places are free


async def test_calls_of_a_stream_that_broke_mid_write_fail_unavailable_as_unary_ones(
    fake_router: Callable[..., Awaitable[tuple[_FakeRouter, RouterStreams]]],
) -> None:
    router, streams = await fake_router(break_after=5)
    body = b"x" * 20_000  # writes stay in flight as the stream ends
    for _ in range(5):  # each round, INTERNAL came about 2 times in 3 before the fix
        calls = [streams.start(_buffered(body=body), 10) for _ in range(200)]
        codes = {await status_of_call(c) for c in calls}
        # Those it may have read fail, and as a broken connection fails a unary call (503).
        assert codes - {grpc.StatusCode.OK} == {grpc.StatusCode.UNAVAILABLE}
        router.calls_read = 0


async def test_a_retired_stream_whose_calls_were_all_given_up_on_is_ended(
    fake_router: Callable[..., Awaitable[tuple[_FakeRouter, RouterStreams]]],
) -> None:
    router, streams = await fake_router(answer=False, max_age=0.2)
    late = streams.start(_buffered(), 0.05)
    assert late is not None
    # The router never answers.
    assert await status_of_call(late) == grpc.StatusCode.DEADLINE_EXCEEDED
    stuck = streams._streams[0]
    assert stuck is not None
    await asyncio.sleep(0.3)
    assert streams.start(_buffered(), 10) is not None  # on a new stream: the old one retires
    # Nobody waits for its call any more: it ends now instead of holding it for good.
    await asyncio.wait_for(asyncio.shield(stuck._reader), timeout=5)
    assert stuck.ended


async def test_a_call_cut_by_the_routers_shutdown_grace_fails_as_a_unary_one(
    fake_vault: FakeVault, router_factory: RouterFactory, upstream: FakeUpstream
) -> None:
    setup_openai(fake_vault, upstream, {})
    started = asyncio.Event()

    async def endless(request: RecordedRequest, reply: Reply) -> None:
        started.set()
        await asyncio.sleep(3600)

    upstream.handler = endless
    codes: list[grpc.StatusCode] = []
    for streamed in (False, True):
        started.clear()
        env = await router_factory(fake_vault.address, fake_vault.token)
        streams = gateway_streams(env)
        stub = env.stub("gateway")
        try:
            call = streams.start(_buffered(), 30) if streamed else None
            if call is None:
                call = stub.InvokeBuffered(_buffered(), timeout=30)
            await asyncio.wait_for(started.wait(), timeout=5)
            await env.router.stop(grace=0.2)
            codes.append(await status_of_call(call))
        finally:
            await streams.aclose()
    assert codes[0] == codes[1] == grpc.StatusCode.UNAVAILABLE
