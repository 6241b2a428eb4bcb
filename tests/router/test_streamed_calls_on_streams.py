"""Streamed model calls (`Invoke`'s) on long-lived `InvokeBufferedStream`s: the gateway's
`RouterStreams.start_stream` against a real router gives exactly what the unary `Invoke` gives
(messages, errors, warnings, the upstream's request, the access log), a slow reader holds back
only its own call (the router's window), cancelling or a deadline closes the upstream request,
a router without streams is answered by the unary `Invoke`; and on the router's side alone,
answers ready together go in one message and a credit read before its call ran is kept."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
import pytest
from aicreds.router.v1 import router_pb2 as pb

from services.common.invoke_streams import ANSWERS_TOGETHER_KEY
from services.gateway.router_streams import RouterStreams, StreamedInvoke
from services.router.buffered_stream import STREAM_WINDOW, CallContext, answer_invoke_stream
from tests.router.conftest import RouterEnv, warnings_of
from tests.router.fake_vault import FakeVault
from tests.router.invoke_requests import (
    ONE_KEY_MISSING,
    SECRET,
    invoke_request,
    one_by_one,
    open_streams,
    router_server,
    serving,
    setup_openai,
    start_stream_when_ready,
)
from tests.support.fake_upstream import FakeUpstream, RecordedRequest, Reply, echo_handler

INVOKE = "/aicreds.router.v1.RouterService/Invoke"
BIG_BODY = (bytes(range(251)) * (4 * 1024 * 1024 // 251 + 1))[: 4 * 1024 * 1024]
"""A 4 MiB body whose pattern (period 251) shows a chunk lost, doubled or out of order."""
BIG_PIECE = 16 * 1024


@dataclass
class Outcome:
    """Everything a streamed call gave: its messages until its end, the error it ended with
    (code, details, `x-error-reason`), and the warnings of its initial metadata once its head
    was read (None when no head came)."""

    messages: list[pb.InvokeResponse] = field(default_factory=list)
    error: tuple[grpc.StatusCode, str, str | None] | None = None
    warnings: list[str] | None = None


def _reason(err: grpc.aio.AioRpcError) -> str | None:
    return next((str(v) for k, v in err.trailing_metadata() or () if k == "x-error-reason"), None)


async def _read_all(call: Any) -> Outcome:
    """Read `call` (grpc.aio's `UnaryStreamCall` or a `StreamedInvoke`) to its end."""
    outcome = Outcome()
    while True:
        try:
            message = await call.read()
        except grpc.aio.AioRpcError as err:
            outcome.error = (err.code(), err.details() or "", _reason(err))
            return outcome
        if message is grpc.aio.EOF:
            return outcome
        outcome.messages.append(message)
        if message.HasField("head"):
            outcome.warnings = warnings_of(await call.initial_metadata())


def _access_lines(caplog: pytest.LogCaptureFixture, *, via: bool) -> list[dict[str, Any]]:
    """The fields of the access-log lines of `Invoke`s: those of calls carried on a stream
    (`via`), or of unary ones."""
    return [
        r.fields  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == "aicreds.access"
        and bool(getattr(r, "fields", {}).get("via")) == via
        and r.fields.get("method") == INVOKE  # type: ignore[attr-defined]
    ]


async def _echo_or_cut(request: RecordedRequest, reply: Reply) -> None:
    """`echo_handler`, but with `cut=1` a head promising 100 bytes, 10 of them, and the
    connection closed."""
    if request.query != "cut=1":
        await echo_handler(request, reply)
        return
    await reply.head(200, [("content-type", "application/json"), ("content-length", "100")])
    await reply.chunk(b"0123456789")
    reply.close()


def _waiting_chunks(call: StreamedInvoke) -> list[int]:
    """The sizes of the body chunks that arrived for `call` and wait to be read."""
    queued = list(call._parts._queue)  # type: ignore[attr-defined]
    return [len(part.chunk) for part in queued if isinstance(part, pb.InvokeResponse)]


async def _head(call: StreamedInvoke) -> pb.InvokeResponse:
    first = await asyncio.wait_for(call.read(), timeout=5)
    assert isinstance(first, pb.InvokeResponse) and first.HasField("head")
    return first


# -- the gateway against a real router -----------------------------------------------------------


async def test_streamed_calls_on_a_stream_give_exactly_what_the_unary_invoke_gives(
    fake_vault: FakeVault,
    fake_env: RouterEnv,
    upstream: FakeUpstream,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    setup_openai(fake_vault, upstream, ONE_KEY_MISSING)
    upstream.handler = _echo_or_cut
    requests = [
        invoke_request(query="a=1"),  # answered, with a warning (no credential `x`)
        invoke_request(provider_name=None, model="openai/gpt-4o"),  # answered by model
        invoke_request(query="cut=1"),  # the upstream breaks off after the head
        invoke_request(provider_name="nope"),  # no such provider
        invoke_request(path="/../admin"),  # a path refused
        invoke_request(provider_name=None, model="claude-9"),  # a model nobody serves
    ]
    stub = fake_env.stub()
    unary = [await _read_all(stub.Invoke(r, timeout=10)) for r in requests]
    unary_codes = sorted(line["code"] for line in _access_lines(caplog, via=False))
    caplog.clear()  # from here on: the streamed calls' records only
    async with open_streams(fake_env) as streams:
        calls = [await start_stream_when_ready(streams, r, 10) for r in requests]
        assert all(isinstance(c, StreamedInvoke) for c in calls)
        streamed = [await _read_all(c) for c in calls]
    assert streamed == unary
    answered = streamed[0]
    assert answered.error is None and answered.messages[0].head.status == 200
    assert answered.warnings == ["Credential not found: x"]
    cut = streamed[2]
    assert [m.WhichOneof("part") for m in cut.messages] == ["head", "chunk"]
    assert cut.error is not None and cut.error[0] == grpc.StatusCode.UNAVAILABLE
    assert [o.error is None for o in streamed] == [True, True, False, False, False, False]
    assert len(upstream.requests) == 6  # three calls each way reached it
    assert all(r.header("authorization") == f"Bearer {SECRET}" for r in upstream.requests)
    # Each call has the access-log line of a unary Invoke (same code), via the stream.
    lines = _access_lines(caplog, via=True)
    assert len(lines) == len(requests)
    assert {line["method"] for line in lines} == {INVOKE}
    assert sorted(line["code"] for line in lines) == unary_codes
    assert unary_codes.count("OK") == 2
    assert all(
        SECRET not in r.getMessage() + repr(getattr(r, "fields", "")) + repr(r.args)
        for r in caplog.records
    )


async def test_a_slow_reader_holds_back_only_its_own_call_and_gets_its_whole_body(
    fake_vault: FakeVault, fake_env: RouterEnv, upstream: FakeUpstream
) -> None:
    setup_openai(fake_vault, upstream, {})

    async def big_or_echo(request: RecordedRequest, reply: Reply) -> None:
        if request.query != "big=1":
            await echo_handler(request, reply)
            return
        await reply.head(200, [("content-type", "application/octet-stream")])
        for start in range(0, len(BIG_BODY), BIG_PIECE):  # as fast as the router takes it
            await reply.chunk(BIG_BODY[start : start + BIG_PIECE])
        await reply.end()

    upstream.handler = big_or_echo
    async with open_streams(fake_env, streams=1) as streams:
        slow = await start_stream_when_ready(streams, invoke_request(query="big=1"), 30)
        assert slow is not None
        await _head(slow)
        # Nothing is read (nor credited) now: the router stops at its window.
        seen: list[int] = []
        steady = 0
        for _ in range(100):
            await asyncio.sleep(0.1)
            waiting = _waiting_chunks(slow)
            total = sum(waiting)
            # Each chunk was sent only while some window was left: all but the last fit in it.
            assert total - (waiting[-1] if waiting else 0) < STREAM_WINDOW
            assert total <= STREAM_WINDOW + max(waiting, default=0)
            steady = steady + 1 if seen and seen[-1] == total else 0
            seen.append(total)
            if steady == 5:
                break
        assert steady == 5, f"the bytes waiting never stopped growing: {seen[-10:]}"
        assert seen[-1] >= STREAM_WINDOW  # it stopped at the window, not before
        # Meanwhile the stream carries other calls: no head-of-line blocking.
        other = await asyncio.wait_for(
            _read_all(await start_stream_when_ready(streams, invoke_request(), 10)), 5
        )
        assert other.error is None and other.messages[0].head.status == 200
        buffered = streams.start(pb.InvokeBufferedRequest(call=invoke_request()), 10)
        assert buffered is not None
        reply = await asyncio.wait_for(buffered, 5)
        assert reply.head.status == 200
        # Reading on credits the router, which sends the rest.
        rest = await asyncio.wait_for(_read_all(slow), timeout=30)
        assert rest.error is None
        assert b"".join(m.chunk for m in rest.messages) == BIG_BODY


async def _one_chunk_then_wait(request: RecordedRequest, reply: Reply) -> None:
    await reply.head(200, [("content-type", "text/event-stream")])
    await reply.chunk(b"data: 1\n\n")
    await asyncio.sleep(3600)


async def _endless(request: RecordedRequest, reply: Reply) -> None:
    await reply.head(200, [("content-type", "application/octet-stream")])
    while True:
        await reply.chunk(BIG_BODY[:BIG_PIECE])


async def _window_full(call: StreamedInvoke) -> None:
    """Until the router has sent `call` its whole window (and so waits for credit)."""
    for _ in range(100):
        if sum(_waiting_chunks(call)) >= STREAM_WINDOW:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the window never filled")


@pytest.mark.parametrize("held_by", ["upstream", "window"])
async def test_cancelling_a_streamed_call_mid_body_closes_the_upstream_and_the_stream_goes_on(
    fake_vault: FakeVault, fake_env: RouterEnv, upstream: FakeUpstream, held_by: str
) -> None:
    """The router's call waits for its upstream's next chunk, or for credit (its generator is
    then parked at a `yield`: the cancellation must close it)."""
    setup_openai(fake_vault, upstream, {})
    upstream.handler = _one_chunk_then_wait if held_by == "upstream" else _endless
    async with open_streams(fake_env, streams=1) as streams:
        call = await start_stream_when_ready(streams, invoke_request(), 30)
        assert call is not None
        await _head(call)
        if held_by == "upstream":
            chunk = await asyncio.wait_for(call.read(), timeout=5)
            assert chunk.chunk == b"data: 1\n\n"
            reading = asyncio.ensure_future(call.read())
            await asyncio.sleep(0.05)
            assert not reading.done()  # it waits for the next chunk
        else:
            await _window_full(call)
            reading = None  # the router waits for credit; what came is dropped on cancel
        assert call.cancel() and not call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(reading if reading is not None else call.read(), timeout=5)
        await asyncio.wait_for(upstream.disconnected.wait(), timeout=5)
        upstream.handler = echo_handler
        again = await asyncio.wait_for(
            _read_all(await start_stream_when_ready(streams, invoke_request(), 10)), 5
        )
        assert again.error is None and again.messages[0].head.status == 200


async def test_a_streamed_calls_deadline_ends_it_and_closes_the_upstream(
    fake_vault: FakeVault, fake_env: RouterEnv, upstream: FakeUpstream
) -> None:
    setup_openai(fake_vault, upstream, {})

    async def slow(request: RecordedRequest, reply: Reply) -> None:
        await reply.head(200, [("content-type", "text/event-stream")])
        await reply.chunk(b"data: 1\n\n")
        await asyncio.sleep(30)

    upstream.handler = slow
    async with open_streams(fake_env) as streams:
        call = await start_stream_when_ready(streams, invoke_request(), 0.3)
        assert call is not None
        outcome = await asyncio.wait_for(_read_all(call), timeout=5)
        assert outcome.error is not None and outcome.error[0] == grpc.StatusCode.DEADLINE_EXCEEDED
        await asyncio.wait_for(upstream.disconnected.wait(), timeout=5)


async def test_reprs_carry_no_request_body_nor_secret(
    fake_vault: FakeVault, fake_env: RouterEnv, upstream: FakeUpstream
) -> None:
    setup_openai(fake_vault, upstream, {"Authorization": ["Bearer {{credential:openai_api_key}}"]})
    marker = "body-" + secrets.token_hex(8)
    async with open_streams(fake_env, streams=1) as streams:
        call = await start_stream_when_ready(
            streams, invoke_request(body=f'{{"q":"{marker}"}}'.encode()), 10
        )
        assert call is not None
        stream = streams._streams[0]
        texts = [repr(call), repr(stream), repr(streams)]
        outcome = await asyncio.wait_for(_read_all(call), timeout=5)
        assert outcome.error is None
        texts += [repr(call), repr(stream)]
    for text in texts:
        assert marker not in text and SECRET not in text and "user-1" not in text


async def test_a_caller_that_does_not_say_it_reads_more_gets_one_answer_per_message(
    fake_vault: FakeVault, fake_env: RouterEnv, upstream: FakeUpstream
) -> None:
    """A gateway from before `more` would drop the answers in it: the router puts answers
    together only for a caller that opened the stream with `ANSWERS_TOGETHER_KEY`."""
    setup_openai(fake_vault, upstream, {})
    stub = fake_env.stub("gateway")
    for together in (False, True):
        metadata = ((ANSWERS_TOGETHER_KEY, "1"),) if together else ()
        call = stub.InvokeBufferedStream(None, metadata=metadata)
        await call.initial_metadata()  # accepted: calls may go
        for ident in range(1, 33):
            await call.write(
                pb.InvokeBufferedStreamRequest(
                    id=ident,
                    call=pb.InvokeBufferedRequest(call=invoke_request()),
                    timeout_ms=10_000,
                )
            )
        await call.done_writing()
        messages = [message async for message in call]
        answers = [a for m in messages for a in (m, *m.more) if a.WhichOneof("result")]
        assert sorted(a.id for a in answers) == list(range(1, 33))
        if not together:
            assert not any(m.more for m in messages)
        assert await call.code() == grpc.StatusCode.OK


# -- the gateway against older routers, and a stream that ends without reading -----------------


class _OlderRouter:
    """A RouterService on 127.0.0.1 whose `Invoke` sends a warning as initial metadata, then a
    head and two chunks, and whose `InvokeBufferedStream` is, by `mode`:

    - `"none"`: absent (a router from before the streams);
    - `"buffered"`: one that answers buffered calls only and never says `takes_streamed` (a
      router from before streamed calls on streams);
    - `"unread"`: one that says `takes_streamed`, reads one message and ends OK without
      answering it (a call the router never ran: the gateway may send it again).
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.invokes: list[pb.InvokeRequest] = []
        self.read_on_streams: list[pb.InvokeBufferedStreamRequest] = []
        handlers: dict[str, grpc.RpcMethodHandler] = {
            "Invoke": grpc.unary_stream_rpc_method_handler(
                self._invoke,
                pb.InvokeRequest.FromString,
                pb.InvokeResponse.SerializeToString,
            ),
            "InvokeBuffered": grpc.unary_unary_rpc_method_handler(
                self._buffered,
                pb.InvokeBufferedRequest.FromString,
                pb.InvokeBufferedResponse.SerializeToString,
            ),
        }
        if mode != "none":
            handlers["InvokeBufferedStream"] = grpc.stream_stream_rpc_method_handler(
                self._stream,
                pb.InvokeBufferedStreamRequest.FromString,
                pb.InvokeBufferedStreamResponse.SerializeToString,
            )
        self._server, self.port = router_server(handlers)

    async def _invoke(
        self, request: pb.InvokeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.InvokeResponse]:
        self.invokes.append(request)
        await context.send_initial_metadata((("x-credential-warning", "Credential not found: x"),))
        yield pb.InvokeResponse(head=pb.ResponseHead(status=200))
        yield pb.InvokeResponse(chunk=b"unary ")
        yield pb.InvokeResponse(chunk=b"answer")

    async def _buffered(
        self, request: pb.InvokeBufferedRequest, context: grpc.aio.ServicerContext
    ) -> pb.InvokeBufferedResponse:
        return pb.InvokeBufferedResponse(head=pb.ResponseHead(status=200), body=b"unary")

    async def _stream(
        self,
        requests: AsyncIterator[pb.InvokeBufferedStreamRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.InvokeBufferedStreamResponse]:
        await context.send_initial_metadata(())  # accepted, as `grpc_handlers` does
        if self.mode == "unread":
            yield pb.InvokeBufferedStreamResponse(takes_streamed=True)
            self.read_on_streams.append(await anext(aiter(requests)))
            return  # OK, the call unanswered: it was never run

        async def answer(request: pb.InvokeBufferedRequest, timeout: float | None) -> Any:
            return pb.InvokeBufferedResponse(head=pb.ResponseHead(status=200), body=b"streamed")

        async for message in answer_invoke_stream(requests, answer):  # no streamed calls
            yield message


@pytest.fixture
async def older_router(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[_OlderRouter, RouterStreams]]:
    router = _OlderRouter(request.param)
    async with serving(router._server, router.port, streams=1) as streams:
        yield router, streams


@pytest.mark.parametrize("older_router", ["none", "buffered"], indirect=True)
async def test_an_older_router_gets_no_streamed_call_on_a_stream(
    older_router: tuple[_OlderRouter, RouterStreams],
) -> None:
    """A router without the stream, or whose stream does not say it takes streamed calls (it
    would ignore them, and they would wait for their deadline), gets them as unary calls."""
    router, streams = older_router
    assert streams.start_stream(invoke_request(), 10) is None  # the stream is being opened
    # A buffered call: on the stream where there is one, else (UNIMPLEMENTED) unary.
    buffered = streams.start(pb.InvokeBufferedRequest(call=invoke_request()), 10)
    assert buffered is not None
    reply = await asyncio.wait_for(buffered, timeout=5)
    assert reply.body == (b"unary" if router.mode == "none" else b"streamed")
    for _ in range(5):  # the stream has answered: whatever it was going to say, it said
        assert streams.start_stream(invoke_request(), 10) is None
        await asyncio.sleep(0.02)
    assert router.invokes == []  # nothing was sent by `start_stream` itself


@pytest.mark.parametrize("older_router", ["unread"], indirect=True)
async def test_a_streamed_call_the_router_never_ran_goes_again_as_a_unary_invoke(
    older_router: tuple[_OlderRouter, RouterStreams],
) -> None:
    router, streams = older_router
    call = await start_stream_when_ready(streams, invoke_request(), 10)
    outcome = await asyncio.wait_for(_read_all(call), timeout=5)
    assert outcome.error is None
    assert [m.WhichOneof("part") for m in outcome.messages] == ["head", "chunk", "chunk"]
    assert b"".join(m.chunk for m in outcome.messages) == b"unary answer"
    assert outcome.warnings == ["Credential not found: x"]  # the unary call's initial metadata
    assert [m.stream for m in router.read_on_streams] == [invoke_request()]
    assert router.invokes == [invoke_request()]  # sent again once, as it was


# -- the router's side alone ----------------------------------------------------------------------


async def _requests(
    queue: asyncio.Queue[pb.InvokeBufferedStreamRequest | None],
) -> AsyncIterator[pb.InvokeBufferedStreamRequest]:
    while (message := await queue.get()) is not None:
        yield message


async def _listed(
    messages: list[pb.InvokeBufferedStreamResponse],
) -> AsyncIterator[pb.InvokeBufferedStreamResponse]:
    for message in messages:
        copy = pb.InvokeBufferedStreamResponse()
        copy.CopyFrom(message)
        yield copy


async def test_answers_ready_together_go_in_one_message_and_each_comes_once() -> None:
    calls = 5
    queue: asyncio.Queue[pb.InvokeBufferedStreamRequest | None] = asyncio.Queue()
    release, all_started = asyncio.Event(), asyncio.Event()
    started: list[bytes] = []

    async def invoke(
        request: pb.InvokeBufferedRequest, timeout: float | None
    ) -> pb.InvokeBufferedResponse:
        started.append(request.call.body)
        if len(started) == calls:
            all_started.set()
        await release.wait()  # every call returns at the same moment
        return pb.InvokeBufferedResponse(head=pb.ResponseHead(status=200), body=request.call.body)

    messages = answer_invoke_stream(_requests(queue), invoke, answers_together=True)
    for ident in range(1, calls + 1):
        call = pb.InvokeBufferedRequest(call=invoke_request(body=str(ident).encode()))
        queue.put_nowait(pb.InvokeBufferedStreamRequest(id=ident, call=call, timeout_ms=10_000))
    first = asyncio.ensure_future(anext(messages))
    await asyncio.wait_for(all_started.wait(), timeout=5)
    release.set()
    got = [await asyncio.wait_for(first, timeout=5)]
    while sum(1 + len(m.more) for m in got) < calls:
        got.append(await asyncio.wait_for(anext(messages), timeout=5))
    queue.put_nowait(None)  # the caller closes its side: the stream ends
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(messages), timeout=5)
    assert len(got) < calls and any(m.more for m in got)
    answers = [a async for a in one_by_one(_listed(got))]
    assert sorted(a.id for a in answers) == list(range(1, calls + 1))
    assert all(a.response.body == str(a.id).encode() for a in answers)


async def test_a_credit_read_before_its_streamed_call_ran_is_kept() -> None:
    credit_read = False
    ran_after_credit: list[bool] = []

    async def requests() -> AsyncIterator[pb.InvokeBufferedStreamRequest]:
        nonlocal credit_read
        # Both in one go: the credit is read before the call's task first ran.
        yield pb.InvokeBufferedStreamRequest(id=1, stream=invoke_request(), timeout_ms=10_000)
        yield pb.InvokeBufferedStreamRequest(id=1, credit=1000)
        credit_read = True

    async def invoke(request: pb.InvokeBufferedRequest, timeout: float | None) -> Any:
        raise AssertionError("no buffered call here")

    async def invoke_streamed(
        request: pb.InvokeRequest, context: CallContext
    ) -> AsyncGenerator[pb.InvokeResponse, None]:
        ran_after_credit.append(credit_read)
        yield pb.InvokeResponse(head=pb.ResponseHead(status=200))
        yield pb.InvokeResponse(chunk=b"0123456789")  # takes the 1-byte window and more
        yield pb.InvokeResponse(chunk=b"abcdefghij")  # goes only with the credit

    answers = one_by_one(answer_invoke_stream(requests(), invoke, invoke_streamed, window=1))
    got = [a async for a in _bounded(answers, timeout=5)]
    assert ran_after_credit == [True]  # the race this test is about did happen
    assert got[0].takes_streamed  # the router's first message says it takes streamed calls
    got = got[1:]
    assert [a.WhichOneof("result") for a in got] == ["part", "part", "part", "end"]
    assert [a.part.chunk for a in got[1:3]] == [b"0123456789", b"abcdefghij"]
    assert all(a.id == 1 for a in got)


async def _bounded(
    answers: AsyncIterator[pb.InvokeBufferedStreamResponse], timeout: float
) -> AsyncIterator[pb.InvokeBufferedStreamResponse]:
    """`answers`, each within `timeout` seconds (a lost credit would stall them for good)."""
    while True:
        try:
            answer = await asyncio.wait_for(anext(answers), timeout=timeout)
        except StopAsyncIteration:
            return
        yield answer
