"""Buffered calls on long-lived `InvokeBufferedStream`s (the gateway's `RouterStreams` against a
real router): the same answers and errors as the unary `InvokeBuffered`, cancellation and
deadlines that close the upstream request, the caller's right checked when a stream opens, a
router without streams answered unary, calls a draining router never read sent again (unary),
calls of a broken stream not sent again, and a full stream never waited for."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack

import grpc
import grpc.aio
import pytest
from aicreds.router.v1 import router_pb2 as pb

from services.gateway.router_streams import RouterStreams, StreamedCall
from services.router.buffered_stream import answer_invoke_stream
from tests.router.conftest import RouterEnv, RouterFactory
from tests.router.fake_vault import FakeVault
from tests.router.invoke_requests import (
    ONE_KEY_MISSING,
    SECRET,
    HeldReply,
    invoke_request,
    one_by_one,
    open_streams,
    router_server,
    serving,
    setup_openai,
)
from tests.support.fake_upstream import FakeUpstream, RecordedRequest, Reply, echo_handler

Outcome = pb.InvokeBufferedResponse | tuple[grpc.StatusCode, str, str | None]


def _buffered(**fields: object) -> pb.InvokeBufferedRequest:
    return pb.InvokeBufferedRequest(call=invoke_request(**fields))


def _reason(err: grpc.aio.AioRpcError) -> str | None:
    return next((str(v) for k, v in err.trailing_metadata() or () if k == "x-error-reason"), None)


async def _outcome(call: object) -> Outcome:
    try:
        reply: pb.InvokeBufferedResponse = await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as err:
        return err.code(), err.details() or "", _reason(err)
    return reply


async def test_streamed_calls_answer_and_fail_exactly_as_unary_ones(
    fake_vault: FakeVault,
    fake_env: RouterEnv,
    upstream: FakeUpstream,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    setup_openai(fake_vault, upstream, ONE_KEY_MISSING)
    requests = [
        _buffered(query="a=1"),
        _buffered(provider_name=None, model="openai/gpt-4o", body=b'{"model":"openai/gpt-4o"}'),
        _buffered(provider_name=None, model="claude-9"),
        _buffered(path="/../admin"),
        _buffered(provider_name=None),
        _buffered(provider_name="nope"),
    ]
    stub = fake_env.stub()
    unary = [await _outcome(stub.InvokeBuffered(r, timeout=10)) for r in requests]
    async with open_streams(fake_env) as streams:
        calls = [streams.start(r, 10) for r in requests]
        assert all(isinstance(c, StreamedCall) for c in calls)
        streamed = [await _outcome(c) for c in calls]
    assert streamed == unary
    first = streamed[0]
    assert isinstance(first, pb.InvokeBufferedResponse) and first.head.status == 200
    assert list(first.warnings) == ["Credential not found: x"]
    assert len(upstream.requests) == 4  # two calls each way reached it
    assert all(r.header("authorization") == f"Bearer {SECRET}" for r in upstream.requests)
    assert sorted(r.body for r in upstream.requests[2:]) == [b'{"model":"gpt-4o"}'] * 2
    # Each call has the access-log line of a unary InvokeBuffered, via the stream.
    lines = [
        r.fields  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == "aicreds.access" and getattr(r, "fields", {}).get("via")
    ]
    assert len(lines) == len(requests)
    assert {line["method"] for line in lines} == {"/aicreds.router.v1.RouterService/InvokeBuffered"}
    assert [line["code"] for line in lines].count("OK") == 2
    # And each exchange with the upstream its line, on the stream too (reported after the
    # answer: `after_answer`).
    exchanges = [r for r in caplog.records if r.getMessage() == "upstream call"]
    assert len(exchanges) == 4
    assert all(
        SECRET not in r.getMessage() + repr(getattr(r, "fields", "")) for r in caplog.records
    )


async def test_cancelling_a_streamed_call_closes_the_upstream_and_the_stream_goes_on(
    fake_vault: FakeVault, fake_env: RouterEnv, upstream: FakeUpstream
) -> None:
    setup_openai(fake_vault, upstream, {})
    started = asyncio.Event()

    async def endless(request: RecordedRequest, reply: Reply) -> None:
        await reply.head(200, [("content-type", "application/json")])
        started.set()
        while True:
            await reply.chunk(b" ")
            await asyncio.sleep(0.02)

    upstream.handler = endless
    async with open_streams(fake_env, streams=1) as streams:
        call = streams.start(_buffered(), 30)
        assert call is not None
        await asyncio.wait_for(started.wait(), timeout=5)
        assert call.cancel() and not call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await asyncio.wait_for(upstream.disconnected.wait(), timeout=2)
        upstream.handler = echo_handler
        again = streams.start(_buffered(), 10)
        reply = await _outcome(again)
        assert isinstance(reply, pb.InvokeBufferedResponse) and reply.head.status == 200


async def test_a_streamed_calls_deadline_closes_the_upstream(
    fake_vault: FakeVault, router_factory: RouterFactory, upstream: FakeUpstream
) -> None:
    env = await router_factory(fake_vault.address, fake_vault.token)
    setup_openai(fake_vault, upstream, {})

    async def slow(request: RecordedRequest, reply: Reply) -> None:
        await reply.head(200, [("content-type", "application/json")])
        await reply.chunk(b"{")
        await asyncio.sleep(30)

    upstream.handler = slow
    async with open_streams(env) as streams:
        outcome = await _outcome(streams.start(_buffered(), 0.3))
        assert isinstance(outcome, tuple) and outcome[0] == grpc.StatusCode.DEADLINE_EXCEEDED
        await asyncio.wait_for(upstream.disconnected.wait(), timeout=2)


@pytest.mark.parametrize(
    ("caller", "code"),
    [
        ("stranger", grpc.StatusCode.UNAUTHENTICATED),
        ("manager", grpc.StatusCode.PERMISSION_DENIED),
    ],
)
async def test_a_stream_needs_a_caller_with_invoke(
    fake_vault: FakeVault,
    fake_env: RouterEnv,
    upstream: FakeUpstream,
    caller: str,
    code: grpc.StatusCode,
) -> None:
    setup_openai(fake_vault, upstream, {})
    async with open_streams(fake_env, caller) as streams:
        outcome = await _outcome(streams.start(_buffered(), 10))
    assert isinstance(outcome, tuple) and outcome[0] == code
    assert upstream.requests == [] and fake_vault.requests == []


async def test_a_stopping_router_finishes_the_streamed_calls_it_read(
    fake_vault: FakeVault, fake_env: RouterEnv, upstream: FakeUpstream
) -> None:
    setup_openai(fake_vault, upstream, {})
    upstream.handler = held = HeldReply()
    async with open_streams(fake_env, streams=1) as streams:
        call = streams.start(_buffered(), 10)
        await asyncio.wait_for(held.started.wait(), timeout=5)
        stopping = asyncio.ensure_future(fake_env.router.stop(grace=60))
        await asyncio.sleep(0.1)
        held.release.set()
        reply = await _outcome(call)
        assert isinstance(reply, pb.InvokeBufferedResponse) and reply.head.status == 200
        # The stream ended once its call was answered: the 60 s grace is not waited out.
        await asyncio.wait_for(stopping, timeout=20)


# -- against a fake router: the cases only a router of another kind shows -----------------------


class FakeRouter:
    """A RouterService on 127.0.0.1 with a unary InvokeBuffered that answers 200 and, with
    `streams`, an InvokeBufferedStream that ends OK without reading for its first `unread`
    streams (a draining router), or with `fail` reads a call and then ends with that status,
    and otherwise answers 200."""

    def __init__(
        self,
        *,
        streams: bool,
        unread: int = 0,
        fail: grpc.StatusCode | None = None,
        refuse: grpc.StatusCode | None = None,
        drain_after_first: bool = False,
    ) -> None:
        self._fail = fail
        self._refuse = refuse
        self.stop = asyncio.Event() if drain_after_first else None
        self.unary_calls = 0
        self.streams_opened = 0
        self.streams_ended = 0  # ended OK after the caller closed its side
        self.read_calls = 0
        self._unread = unread
        handlers: dict[str, grpc.RpcMethodHandler] = {
            "InvokeBuffered": grpc.unary_unary_rpc_method_handler(
                self._unary,
                pb.InvokeBufferedRequest.FromString,
                pb.InvokeBufferedResponse.SerializeToString,
            )
        }
        if streams:
            handlers["InvokeBufferedStream"] = grpc.stream_stream_rpc_method_handler(
                self._stream,
                pb.InvokeBufferedStreamRequest.FromString,
                pb.InvokeBufferedStreamResponse.SerializeToString,
            )
        self._server, self.port = router_server(handlers)

    async def _unary(
        self, request: pb.InvokeBufferedRequest, context: grpc.aio.ServicerContext
    ) -> pb.InvokeBufferedResponse:
        self.unary_calls += 1
        return pb.InvokeBufferedResponse(head=pb.ResponseHead(status=200), body=b"unary")

    async def _stream(
        self,
        requests: AsyncIterator[pb.InvokeBufferedStreamRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.InvokeBufferedStreamResponse]:
        self.streams_opened += 1
        if self._refuse is not None:  # refused before it was accepted: nothing was sent
            await context.abort(self._refuse, "not now")
        await context.send_initial_metadata(())  # accepted, as grpc_handlers does
        if self.streams_opened <= self._unread:
            await asyncio.sleep(0.05)  # let the call arrive, then end OK without reading it
            return
        if self._fail is not None:
            await anext(aiter(requests))  # read the call, then break
            self.read_calls += 1
            await context.abort(self._fail, "gone")

        async def answer(invoke: pb.InvokeBufferedRequest) -> pb.InvokeBufferedResponse:
            return pb.InvokeBufferedResponse(head=pb.ResponseHead(status=200), body=b"streamed")

        stop = self.stop if self.streams_opened == 1 else None
        async for answer_message in answer_invoke_stream(
            self._counted(requests), lambda r, t: answer(r), stop=stop
        ):
            yield answer_message
        self.streams_ended += 1

    async def _counted(
        self, requests: AsyncIterator[pb.InvokeBufferedStreamRequest]
    ) -> AsyncIterator[pb.InvokeBufferedStreamRequest]:
        async for message in requests:
            self.read_calls += 1
            yield message


@pytest.fixture
async def fake_router_factory() -> AsyncIterator[Callable[..., asyncio.Future[FakeRouter]]]:
    async with AsyncExitStack() as stack:

        async def make(**options: object) -> tuple[FakeRouter, RouterStreams]:
            router = FakeRouter(**options)  # type: ignore[arg-type]
            streams = await stack.enter_async_context(serving(router._server, router.port))
            return router, streams

        yield make  # type: ignore[misc]


async def test_a_router_without_streams_answers_unary_calls(
    fake_router_factory: Callable[..., asyncio.Future[tuple[FakeRouter, RouterStreams]]],
) -> None:
    router, streams = await fake_router_factory(streams=False)
    first = await _outcome(streams.start(_buffered(), 10))
    assert isinstance(first, pb.InvokeBufferedResponse) and first.body == b"unary"
    assert streams.start(_buffered(), 10) is None  # unary from now on, for a while
    assert router.unary_calls == 1


async def test_calls_a_draining_router_never_read_are_sent_again_unary(
    fake_router_factory: Callable[..., asyncio.Future[tuple[FakeRouter, RouterStreams]]],
) -> None:
    router, streams = await fake_router_factory(streams=True, unread=1)
    reply = await _outcome(streams.start(_buffered(), 10))
    assert isinstance(reply, pb.InvokeBufferedResponse) and reply.body == b"unary"
    assert router.read_calls == 0 and router.unary_calls == 1
    # The next call opens a new stream (this one reads).
    reply = await _outcome(streams.start(_buffered(), 10))
    assert isinstance(reply, pb.InvokeBufferedResponse) and reply.body == b"streamed"
    assert router.streams_opened == 2 and router.read_calls == 1


async def test_calls_of_a_stream_refused_before_it_was_accepted_are_sent_again_unary(
    fake_router_factory: Callable[..., asyncio.Future[tuple[FakeRouter, RouterStreams]]],
) -> None:
    router, streams = await fake_router_factory(streams=True, refuse=grpc.StatusCode.UNAVAILABLE)
    reply = await _outcome(streams.start(_buffered(), 10))
    # Never written (the stream was not accepted), so safe to send again.
    assert isinstance(reply, pb.InvokeBufferedResponse) and reply.body == b"unary"
    assert router.read_calls == 0 and router.unary_calls == 1


async def test_a_draining_router_has_the_gateway_close_its_side_and_move_on(
    fake_router_factory: Callable[..., asyncio.Future[tuple[FakeRouter, RouterStreams]]],
) -> None:
    router, streams = await fake_router_factory(streams=True, drain_after_first=True)
    reply = await _outcome(streams.start(_buffered(), 10))
    assert isinstance(reply, pb.InvokeBufferedResponse) and reply.body == b"streamed"
    assert router.stop is not None
    router.stop.set()  # the router begins to stop: `draining` on the first stream
    for _ in range(100):
        if router.streams_ended == 1:
            break
        await asyncio.sleep(0.02)
    # The gateway closed its side, so the stream ended OK, with nothing in flight.
    assert router.streams_ended == 1
    reply = await _outcome(streams.start(_buffered(), 10))
    assert isinstance(reply, pb.InvokeBufferedResponse) and reply.body == b"streamed"
    assert router.streams_opened == 2 and router.unary_calls == 0


async def test_calls_of_a_stream_that_broke_are_not_sent_again(
    fake_router_factory: Callable[..., asyncio.Future[tuple[FakeRouter, RouterStreams]]],
) -> None:
    router, streams = await fake_router_factory(streams=True, fail=grpc.StatusCode.UNAVAILABLE)
    outcome = await _outcome(streams.start(_buffered(), 10))
    assert isinstance(outcome, tuple) and outcome[0] == grpc.StatusCode.UNAVAILABLE
    assert router.read_calls == 1 and router.unary_calls == 0


async def test_a_full_stream_is_never_waited_for(
    fake_vault: FakeVault, fake_env: RouterEnv, upstream: FakeUpstream
) -> None:
    setup_openai(fake_vault, upstream, {})
    upstream.handler = held = HeldReply()
    async with open_streams(fake_env, streams=1, max_in_flight=1) as streams:
        first = streams.start(_buffered(), 10)
        assert first is not None
        assert streams.start(_buffered(), 10) is None  # the caller sends it unary instead
        held.release.set()
        reply = await _outcome(first)
        assert isinstance(reply, pb.InvokeBufferedResponse) and reply.head.status == 200
        assert streams.start(_buffered(), 10) is not None  # its place is free again


# -- the router's side alone ----------------------------------------------------------------------


async def _requests(
    queue: asyncio.Queue[pb.InvokeBufferedStreamRequest | None],
) -> AsyncIterator[pb.InvokeBufferedStreamRequest]:
    while (message := await queue.get()) is not None:
        yield message


def _call(ident: int) -> pb.InvokeBufferedStreamRequest:
    return pb.InvokeBufferedStreamRequest(id=ident, call=_buffered(), timeout_ms=10_000)


async def test_a_cancel_and_a_duplicate_id_are_answered_and_the_stream_goes_on() -> None:
    queue: asyncio.Queue[pb.InvokeBufferedStreamRequest | None] = asyncio.Queue()
    started = asyncio.Event()

    async def invoke(request: pb.InvokeBufferedRequest, timeout: float | None) -> object:
        started.set()
        await asyncio.sleep(30)
        raise AssertionError("never answered")

    answers = one_by_one(answer_invoke_stream(_requests(queue), invoke))  # type: ignore[arg-type]
    queue.put_nowait(_call(1))
    queue.put_nowait(_call(1))
    duplicate = await anext(answers)
    assert duplicate.id == 1 and duplicate.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    await started.wait()
    queue.put_nowait(pb.InvokeBufferedStreamRequest(id=1, cancel=True))
    queue.put_nowait(pb.InvokeBufferedStreamRequest(id=7, cancel=True))  # not in flight: ignored
    cancelled = await anext(answers)
    assert cancelled.id == 1 and cancelled.error.code == grpc.StatusCode.CANCELLED.value[0]
    queue.put_nowait(None)  # the caller closes its side: the stream ends
    with pytest.raises(StopAsyncIteration):
        await anext(answers)


async def test_a_draining_stream_tells_the_caller_and_ends_after_its_side_closed() -> None:
    queue: asyncio.Queue[pb.InvokeBufferedStreamRequest | None] = asyncio.Queue()
    started, release, stop = asyncio.Event(), asyncio.Event(), asyncio.Event()
    invoked: list[pb.InvokeBufferedRequest] = []

    async def invoke(
        request: pb.InvokeBufferedRequest, timeout: float | None
    ) -> pb.InvokeBufferedResponse:
        invoked.append(request)
        started.set()
        await release.wait()
        return pb.InvokeBufferedResponse(head=pb.ResponseHead(status=200))

    answers = one_by_one(answer_invoke_stream(_requests(queue), invoke, stop=stop))
    queue.put_nowait(_call(1))
    first = asyncio.ensure_future(anext(answers))
    await started.wait()
    stop.set()
    assert (await first).draining  # the caller is told first, before any answer
    queue.put_nowait(_call(2))  # sent before the caller saw it: still read and answered
    release.set()
    assert sorted([(await anext(answers)).id, (await anext(answers)).id]) == [1, 2]
    ended = asyncio.ensure_future(anext(answers))
    await asyncio.sleep(0.05)
    assert not ended.done()  # the stream waits for the caller to close its side
    queue.put_nowait(None)
    with pytest.raises(StopAsyncIteration):
        await ended
    assert len(invoked) == 2
