"""Attempts to break streamed calls on `InvokeBufferedStream` (a review's tests): flow control
with any chunk size, cancels and deadlines while a call waits for credit, draining on a busy
stream, the batch bound, memory held by a slow reader, request ids of calls sent again, secrets
in logs and reprs, and one last answer per call whatever races it."""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import AsyncGenerator, AsyncIterator

import grpc
import grpc.aio
import pytest
from aicreds.router.v1 import router_pb2 as pb
from starlette.responses import JSONResponse

from services.common.request_context import bind_request_id, unbind_request_id
from services.gateway.model_api.stream_relay import RouterRelay
from services.gateway.router_streams import RouterStreams, StreamedInvoke
from services.router.buffered_stream import (
    BATCH_BYTES,
    CallContext,
    answer_invoke_stream,
)
from tests.router.conftest import RouterEnv
from tests.router.fake_vault import FakeVault
from tests.router.invoke_requests import (
    SECRET,
    gateway_streams,
    invoke_request,
    one_by_one,
    open_streams,
    router_server,
    serving,
    setup_openai,
    start_stream_when_ready,
)
from tests.support.fake_upstream import FakeUpstream, RecordedRequest, Reply, echo_handler


async def _requests(
    queue: asyncio.Queue[pb.InvokeBufferedStreamRequest | None],
) -> AsyncIterator[pb.InvokeBufferedStreamRequest]:
    while (message := await queue.get()) is not None:
        yield message


def _stream_call(ident: int, user: str = "u") -> pb.InvokeBufferedStreamRequest:
    return pb.InvokeBufferedStreamRequest(
        id=ident, stream=pb.InvokeRequest(user_id=user), timeout_ms=60_000
    )


async def _never(
    request: pb.InvokeBufferedRequest, timeout: float | None
) -> pb.InvokeBufferedResponse:
    raise AssertionError("no buffered call here")


async def test_draining_reaches_a_busy_stream() -> None:
    """Under a steady flow of chunks the `draining` message must still go out: a stopping
    router that never tells the gateway waits out its grace and then cuts every call."""
    queue: asyncio.Queue[pb.InvokeBufferedStreamRequest | None] = asyncio.Queue()
    stop = asyncio.Event()

    async def chatty(
        request: pb.InvokeRequest, context: CallContext
    ) -> AsyncGenerator[pb.InvokeResponse, None]:
        yield pb.InvokeResponse(head=pb.ResponseHead(status=200))
        sent = 0
        while True:
            yield pb.InvokeResponse(chunk=b"x" * 100)
            sent += 1
            if request.user_id == "stopper" and sent == 10:
                stop.set()  # the router begins to stop while the calls stream
            await asyncio.sleep(0)

    answers = answer_invoke_stream(
        _requests(queue),
        _never,
        chatty,
        stop=stop,
        window=1 << 40,
        answers_together=True,
    )
    for ident in (1, 2, 3):
        queue.put_nowait(_stream_call(ident, "stopper" if ident == 2 else "u"))
    seen = 0
    draining = False
    try:
        async for message in answers:
            seen += 1
            if message.draining:
                draining = True
                break
            assert not any(m.draining for m in message.more)
            await asyncio.sleep(0)  # gRPC's write of the message
            if seen > 2000:
                break
    finally:
        await answers.aclose()  # type: ignore[attr-defined]
    assert draining, f"no draining in {seen} messages after stop"


# -- against a real router ------------------------------------------------------------------------


async def _read_all(call: object, pause: float = 0.0) -> tuple[list[object], bytes]:
    messages: list[object] = []
    body = b""
    while (m := await call.read()) is not grpc.aio.EOF:  # type: ignore[attr-defined]
        messages.append(m)
        body += m.chunk
        if pause:
            await asyncio.sleep(pause)
    return messages, body


@pytest.mark.parametrize("size", [1, 1000, 70_000, 300_000, 1_000_000])
async def test_a_slow_reader_gets_the_whole_body_whatever_the_chunk_size(
    fake_vault: FakeVault, fake_env: RouterEnv, upstream: FakeUpstream, size: int
) -> None:
    setup_openai(fake_vault, upstream, {"X-Org": ["{{credential:x}}"]})
    total = 2 * 1024 * 1024 if size > 1 else 20_000

    async def big(request: RecordedRequest, reply: Reply) -> None:
        await reply.head(200, [("content-type", "application/octet-stream")])
        sent = 0
        while sent < total:
            await reply.chunk(b"y" * min(size, total - sent))
            sent += size
        await reply.end()

    upstream.handler = big
    async with open_streams(fake_env, streams=1) as streams:
        call = await start_stream_when_ready(streams, invoke_request(), 30)
        assert isinstance(call, StreamedInvoke)
        messages, body = await asyncio.wait_for(_read_all(call, 0.0005 if size > 1 else 0), 25)
        assert len(body) == total
        assert messages[0].HasField("head")  # type: ignore[attr-defined]
        warnings = [v for k, v in await call.initial_metadata() if k == "x-credential-warning"]
        assert warnings == ["Credential not found: x"]


async def _endless_octets(request: RecordedRequest, reply: Reply) -> None:
    """An upstream that never stops sending 64 KiB pieces as fast as it is read."""
    await reply.head(200, [("content-type", "application/octet-stream")])
    while True:
        await reply.chunk(b"z" * 65536)


async def test_a_deadline_while_waiting_for_credit_closes_the_upstream(
    fake_vault: FakeVault, fake_env: RouterEnv, upstream: FakeUpstream
) -> None:
    setup_openai(fake_vault, upstream, {})

    upstream.handler = _endless_octets
    async with open_streams(fake_env, streams=1) as streams:
        call = await start_stream_when_ready(streams, invoke_request(), 1.0)
        assert call is not None
        first = await call.read()  # the head; then nothing is read: no credit
        assert first.HasField("head")
        await asyncio.wait_for(upstream.disconnected.wait(), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            while await call.read() is not grpc.aio.EOF:
                pass
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        # The stream goes on.
        upstream.handler = _short
        again = await start_stream_when_ready(streams, invoke_request(), 10)
        _, body = await asyncio.wait_for(_read_all(again), 10)
        assert body == b"ok"


async def _short(request: RecordedRequest, reply: Reply) -> None:
    await reply.head(200, [("content-type", "text/plain")])
    await reply.chunk(b"ok")
    await reply.end()


async def test_a_cancel_while_waiting_for_credit_closes_the_upstream_and_frees_the_place(
    fake_vault: FakeVault, fake_env: RouterEnv, upstream: FakeUpstream
) -> None:
    setup_openai(fake_vault, upstream, {})

    upstream.handler = _endless_octets
    async with open_streams(fake_env, streams=1, max_in_flight=1) as streams:
        call = await start_stream_when_ready(streams, invoke_request(), 30)
        assert call is not None
        assert (await call.read()).HasField("head")
        await asyncio.sleep(0.3)  # the router fills the window and waits for credit
        assert call.cancel() and not call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call.read()
        await asyncio.wait_for(upstream.disconnected.wait(), timeout=5)
        upstream.handler = _short
        for _ in range(100):  # the place comes back once the router's answer arrives
            again = await start_stream_when_ready(streams, invoke_request(), 10)
            if again is not None:
                break
            await asyncio.sleep(0.02)
        assert again is not None
        _, body = await asyncio.wait_for(_read_all(again), 10)
        assert body == b"ok"


async def test_streamed_errors_match_unary(
    fake_vault: FakeVault, fake_env: RouterEnv, upstream: FakeUpstream
) -> None:
    setup_openai(fake_vault, upstream, {})
    stub = fake_env.stub()
    requests = [invoke_request(provider_name="nope"), invoke_request(path="/../admin")]
    streams = gateway_streams(fake_env, streams=1)

    async def outcome(call: object) -> object:
        try:
            return await _read_all(call)
        except grpc.aio.AioRpcError as err:
            return err.code(), err.details()

    try:
        for request in requests:
            unary = await outcome(stub.Invoke(request, timeout=10))
            streamed = await outcome(await start_stream_when_ready(streams, request, 10))
            assert streamed == unary
    finally:
        await streams.aclose()


async def test_the_relay_over_a_stream_has_warnings_and_a_client_gone_closes_the_upstream(
    fake_vault: FakeVault, fake_env: RouterEnv, upstream: FakeUpstream
) -> None:
    setup_openai(fake_vault, upstream, {"X-Org": ["{{credential:x}}"]})

    async def endless(request: RecordedRequest, reply: Reply) -> None:
        await reply.head(200, [("content-type", "text/event-stream")])
        while True:
            await reply.chunk(b"data: {}\n\n")
            await asyncio.sleep(0.01)

    upstream.handler = endless
    async with open_streams(fake_env, streams=1) as streams:
        call = await start_stream_when_ready(streams, invoke_request(), 30)
        assert call is not None
        sent: list[dict[str, object]] = []
        gone = asyncio.Event()

        async def receive() -> dict[str, object]:
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, object]) -> None:
            sent.append(message)
            if len(sent) >= 4:
                gone.set()

        relay = RouterRelay(
            call,
            render_error=lambda e: JSONResponse({}, 500),
            stream_error_event=lambda e: b"",
        )
        await asyncio.wait_for(relay({"type": "http"}, receive, send), 5)  # type: ignore[arg-type]
        headers = sent[0]["headers"]
        assert (b"x-credential-warning", b"Credential not found: x") in headers  # type: ignore[operator]
        await asyncio.wait_for(upstream.disconnected.wait(), timeout=5)
        assert streams._streams[0] is not None
        for _ in range(100):
            if not streams._streams[0]._pending:
                break
            await asyncio.sleep(0.02)
        assert not streams._streams[0]._pending  # the router answered the cancel: place free


async def test_a_stopping_router_finishes_a_streamed_call_and_ends_the_stream_ok(
    fake_vault: FakeVault, fake_env: RouterEnv, upstream: FakeUpstream
) -> None:
    setup_openai(fake_vault, upstream, {})
    started, release = asyncio.Event(), asyncio.Event()

    async def held(request: RecordedRequest, reply: Reply) -> None:
        await reply.head(200, [("content-type", "text/plain")])
        await reply.chunk(b"a" * 100_000)
        started.set()
        await release.wait()
        await reply.chunk(b"b" * 500_000)
        await reply.end()

    upstream.handler = held
    async with open_streams(fake_env, streams=1) as streams:
        call = await start_stream_when_ready(streams, invoke_request(), 30)
        assert call is not None
        await asyncio.wait_for(started.wait(), timeout=5)
        stopping = asyncio.ensure_future(fake_env.router.stop(grace=60))
        await asyncio.sleep(0.1)
        release.set()
        _, body = await asyncio.wait_for(_read_all(call, 0.001), 10)
        assert body == b"a" * 100_000 + b"b" * 500_000
        await asyncio.wait_for(stopping, timeout=20)


async def test_a_streamed_call_cancelled_before_it_was_written_never_reaches_the_upstream(
    fake_vault: FakeVault, fake_env: RouterEnv, upstream: FakeUpstream
) -> None:
    setup_openai(fake_vault, upstream, {})
    upstream.handler = _short
    async with open_streams(fake_env, streams=1, max_in_flight=1) as streams:
        call = await start_stream_when_ready(streams, invoke_request(), 10)
        assert call is not None and call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call.read()
        again = await start_stream_when_ready(
            streams, invoke_request(), 10
        )  # its place is free at once?
        for _ in range(100):
            if again is not None:
                break
            await asyncio.sleep(0.01)
            again = await start_stream_when_ready(streams, invoke_request(), 10)
        assert again is not None
        _, body = await asyncio.wait_for(_read_all(again), 10)
        assert body == b"ok"
        assert len(upstream.requests) == 1


async def test_a_stream_ending_while_a_call_waits_for_credit_closes_the_upstream(
    fake_vault: FakeVault, fake_env: RouterEnv, upstream: FakeUpstream
) -> None:
    setup_openai(fake_vault, upstream, {})

    upstream.handler = _endless_octets
    streams = gateway_streams(fake_env, streams=1)
    call = await start_stream_when_ready(streams, invoke_request(), 30)
    assert call is not None
    assert (await call.read()).HasField("head")
    await asyncio.sleep(0.3)  # parked waiting for credit
    await streams.aclose()
    await asyncio.wait_for(upstream.disconnected.wait(), timeout=5)
    with pytest.raises(grpc.aio.AioRpcError):
        while await call.read() is not grpc.aio.EOF:
            pass


def _rss_mib() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 // (1 << 20)


async def test_a_slow_streamed_call_does_not_pin_other_calls_answers_in_memory() -> None:
    """A part taken out of a batched message (`answer.more[i].part`) is a view into that
    message's upb arena: while it waits in a slow call's queue, the whole batch (other calls'
    answers, up to 32 MiB of a buffered body) stays in memory."""
    batches = 50
    big = os.urandom(4 << 20)
    sent = asyncio.Event()

    async def stream(
        requests: AsyncIterator[pb.InvokeBufferedStreamRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.InvokeBufferedStreamResponse]:
        await context.send_initial_metadata(())
        yield pb.InvokeBufferedStreamResponse(takes_streamed=True)
        first = await anext(aiter(requests))
        yield pb.InvokeBufferedStreamResponse(
            id=first.id, part=pb.InvokeResponse(head=pb.ResponseHead(status=200))
        )
        for n in range(batches):
            message = pb.InvokeBufferedStreamResponse(
                id=first.id, part=pb.InvokeResponse(chunk=b"%05d" % n)
            )
            # Another call's buffered answer (an id not in flight: dropped by the gateway).
            message.more.add(id=10_000 + n, response=pb.InvokeBufferedResponse(body=big))
            yield message
        sent.set()
        await asyncio.sleep(30)

    server, port = router_server(
        {
            "InvokeBufferedStream": grpc.stream_stream_rpc_method_handler(
                stream,
                pb.InvokeBufferedStreamRequest.FromString,
                pb.InvokeBufferedStreamResponse.SerializeToString,
            ),
        }
    )
    async with serving(server, port, streams=1) as streams:
        gc.collect()
        before = _rss_mib()
        call = await start_stream_when_ready(streams, invoke_request(), 30)
        assert call is not None
        assert (await call.read()).HasField("head")  # then the client reads nothing more
        await asyncio.wait_for(sent.wait(), 10)
        for _ in range(200):
            if call._parts.qsize() >= batches:
                break
            await asyncio.sleep(0.02)
        assert call._parts.qsize() == batches  # 50 chunks of 5 bytes wait for the client
        gc.collect()
        grown = _rss_mib() - before
        # 250 bytes of this call's body wait; the other calls' 200 MiB should be gone.
        assert grown < 60, f"the gateway holds {grown} MiB for 250 bytes of a slow call"
        call.cancel()


async def test_an_answer_over_batch_bytes_goes_alone() -> None:
    """BATCH_BYTES: "a larger one goes alone". The size is checked before an answer is added,
    so a large buffered answer (up to 32 MiB) is appended to a batch: copied into it
    (`more.extend`), and at the gateway it pins the batch's other answers."""
    queue: asyncio.Queue[pb.InvokeBufferedStreamRequest | None] = asyncio.Queue()
    release = asyncio.Event()

    async def invoke(
        request: pb.InvokeBufferedRequest, timeout: float | None
    ) -> pb.InvokeBufferedResponse:
        await release.wait()
        size = 10 if request.call.path == "/small" else BATCH_BYTES * 4
        return pb.InvokeBufferedResponse(head=pb.ResponseHead(status=200), body=b"b" * size)

    answers = answer_invoke_stream(
        _requests(queue),
        invoke,
        answers_together=True,
    )
    for ident, path in ((1, "/small"), (2, "/big")):
        queue.put_nowait(
            pb.InvokeBufferedStreamRequest(
                id=ident,
                call=pb.InvokeBufferedRequest(call=pb.InvokeRequest(path=path)),
                timeout_ms=10_000,
            )
        )
    pending = asyncio.ensure_future(anext(answers))
    await asyncio.sleep(0.05)
    release.set()
    first = await pending
    try:
        sizes = [first.ByteSize()] + [m.ByteSize() for m in first.more]
        assert not any(m.ByteSize() > BATCH_BYTES for m in first.more), sizes
    finally:
        queue.put_nowait(None)
        await answers.aclose()  # type: ignore[attr-defined]


async def test_a_streamed_call_sent_again_unary_carries_its_own_request_id() -> None:
    """`go_unary` runs in the stream's reader task, whose context is that of the request that
    happened to open the stream: the unary `Invoke` carries that request's id."""
    seen: list[str] = []

    async def stream(
        requests: AsyncIterator[object], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[object]:
        await context.send_initial_metadata(())
        yield pb.InvokeBufferedStreamResponse(takes_streamed=True)
        await asyncio.sleep(0.1)  # a draining router: ends OK without reading
        return
        yield  # a generator

    async def unary_invoke(
        request: pb.InvokeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[object]:
        seen.append(next(str(v) for k, v in context.invocation_metadata() if k == "x-request-id"))
        yield pb.InvokeResponse(head=pb.ResponseHead(status=200))

    server, port = router_server(
        {
            "InvokeBufferedStream": grpc.stream_stream_rpc_method_handler(
                stream,
                pb.InvokeBufferedStreamRequest.FromString,
                pb.InvokeBufferedStreamResponse.SerializeToString,
            ),
            "Invoke": grpc.unary_stream_rpc_method_handler(
                unary_invoke, pb.InvokeRequest.FromString, pb.InvokeResponse.SerializeToString
            ),
        }
    )

    async def one(streams: RouterStreams, request_id: str) -> None:
        token = bind_request_id(request_id)
        try:
            call = await start_stream_when_ready(streams, invoke_request(), 5)
            assert call is not None
            await asyncio.wait_for(_read_all(call), 5)
        finally:
            unbind_request_id(token)

    async with serving(server, port, streams=1) as streams:
        await asyncio.gather(one(streams, "req-opener"), one(streams, "req-second"))
        assert sorted(seen) == ["req-opener", "req-second"]


async def test_no_secret_or_body_in_logs_or_reprs_of_a_streamed_call(
    fake_vault: FakeVault,
    fake_env: RouterEnv,
    upstream: FakeUpstream,
    all_logs: object,
) -> None:
    setup_openai(fake_vault, upstream, {"Authorization": ["Bearer {{credential:openai_api_key}}"]})
    upstream.handler = echo_handler
    body = b'{"model":"gpt-4o","messages":"BODY-MARKER-42"}'
    async with open_streams(fake_env, streams=1) as streams:
        call = await start_stream_when_ready(streams, invoke_request(body=body), 10)
        assert call is not None
        reprs = repr(call) + repr(streams) + repr(streams._streams[0])
        await asyncio.wait_for(_read_all(call), 10)
        failing = await start_stream_when_ready(
            streams, invoke_request(provider_name="nope", body=body), 10
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _read_all(failing)
        reprs += repr(failing) + repr(err.value) + str(err.value)
    text = all_logs() + reprs  # type: ignore[operator]
    assert SECRET not in text and "BODY-MARKER-42" not in text


@pytest.mark.parametrize("steps", [0, 1, 2, 3, 5, 8])
async def test_a_cancel_racing_the_end_gives_one_last_answer_and_frees_one_place(
    steps: int,
) -> None:
    queue: asyncio.Queue[pb.InvokeBufferedStreamRequest | None] = asyncio.Queue()

    async def short(
        request: pb.InvokeRequest, context: CallContext
    ) -> AsyncGenerator[pb.InvokeResponse, None]:
        yield pb.InvokeResponse(head=pb.ResponseHead(status=200))
        yield pb.InvokeResponse(chunk=b"x" * 10)

    answers = one_by_one(answer_invoke_stream(_requests(queue), _never, short, max_in_flight=1))
    queue.put_nowait(_stream_call(1))
    for _ in range(steps):
        await asyncio.sleep(0)
    queue.put_nowait(pb.InvokeBufferedStreamRequest(id=1, cancel=True))
    queue.put_nowait(pb.InvokeBufferedStreamRequest(id=1, credit=100))
    queue.put_nowait(_stream_call(2))  # needs the place of call 1
    queue.put_nowait(None)
    got = [a async for a in answers]
    lasts = [
        (a.id, a.WhichOneof("result")) for a in got if a.WhichOneof("result") not in ("part", None)
    ]
    assert len(lasts) == 2 and {i for i, _ in lasts} == {1, 2}, lasts
