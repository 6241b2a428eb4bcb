"""`InvokeBufferedStream`: many `InvokeBuffered` calls on one stream, each answered as the unary
RPC would answer it.

A unary call costs each side a gRPC call of its own: on this project's 2-core machine a bare
grpc.aio unary round trip took about 0.54 ms where a message each way on an open stream took
0.23 ms, and the router's per-call share of the interceptor, call object and task goes with it.
The gateway keeps a few of these streams (`services.gateway.router_streams`).

The caller was authenticated (right `invoke`) when the stream opened (`grpc_handlers`). Each
call then runs, with its own deadline, through the servicer's own `InvokeBuffered`
(`StreamingRouterServicer`): the same resolve, substitution, checks, upstream request and answer.
Its answer carries its id. A call that fails is answered with the status the unary RPC would have
ended with (`grpc_handlers.status_of`: same code, message and reason); one past its deadline with
DEADLINE_EXCEEDED; one the caller cancelled with CANCELLED (its upstream request is closed at
once). Each call has the access-log line of a unary `InvokeBuffered`, with `via` naming the
stream.

The rules this stream shares with the vault's `ResolveStream` (a task per call, its reports after
its answer, at most `MAX_IN_FLIGHT` calls in flight) are in `services.common.stream_answers`.
What follows is its own.

A stream also carries streamed calls (`Invoke`'s): each runs through the servicer's own
`Invoke`, and its messages go back as parts with its id, then `end` or the error `Invoke` would
end with. Its body goes at most `STREAM_WINDOW` bytes ahead of what the caller has credited
(`_Window`): beyond that the call stops reading its upstream answer until credit comes, so a
slow reader holds back its own call and neither this stream nor the router's memory.

The answers that are ready together go in one message (`more`), up to `BATCH_BYTES`, when the
caller said at the stream's opening that it reads them (metadata `ANSWERS_TOGETHER_KEY`: a
caller from before would drop `more`): under load several calls' chunks and answers then cost
gRPC one message instead of one each. The stream's first message says that it takes streamed
calls (`TAKES_STREAMED`: a router from before would ignore them).

A place among the `MAX_IN_FLIGHT` is freed when gRPC has taken the call's last answer: a streamed
call's parts free none, nor do `draining` and `takes_streamed`. A caller that counts its own calls
in flight against the same limit (the gateway does) never meets it, so the reader never waits for
a place and the caller's cancellations are read at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, cast

import grpc
import grpc.aio
from aicreds.router.v1 import router_pb2 as pb

from services.common.grpc_handlers import record_streamed_request, status_of
from services.common.invoke_streams import ANSWERS_TOGETHER_KEY, CREDENTIAL_WARNING_KEY
from services.common.stream_answers import END, StreamAnswers, begin_request
from services.router.servicer import RouterServicer

MAX_IN_FLIGHT = 1000
"""Calls in flight per stream (the proto's promise)."""
STREAM_WINDOW = 256 * 1024
"""Body bytes of a streamed call sent beyond the caller's credit (the proto's promise)."""
BATCH_BYTES = 256 * 1024
"""Answers are put together in one message while it holds at most this many bytes (a larger
answer goes alone)."""
_NOTHING = object()

METHOD = "/aicreds.router.v1.RouterService/InvokeBufferedStream"
# Each call's access-log line is that of the unary call it stands for (`via` the stream).
INVOKE_BUFFERED = "/aicreds.router.v1.RouterService/InvokeBuffered"
INVOKE = "/aicreds.router.v1.RouterService/Invoke"

InvokeOne = Callable[[pb.InvokeBufferedRequest, float | None], Awaitable[pb.InvokeBufferedResponse]]
"""One buffered call: the request and its timeout in seconds (None: the router's default)."""
InvokeStreamed = Callable[
    [pb.InvokeRequest, "CallContext"], AsyncGenerator[pb.InvokeResponse, None]
]
"""One streamed call: the request and its context (deadline; it keeps the warnings)."""


TAKES_STREAMED = pb.InvokeBufferedStreamResponse(takes_streamed=True)
"""The router's first message on a stream that takes streamed calls: a gateway sends none
before it (a router from before streamed calls would ignore them, and they would wait for their
deadline)."""

DRAINING = pb.InvokeBufferedStreamResponse(draining=True)
"""Sent once when the router begins to stop: the caller sends no further call and closes
its side (once its calls are answered; it may still cancel them)."""


def _error(ident: int, code: grpc.StatusCode, message: str, reason: str = "") -> Any:
    error = pb.CallError(code=code.value[0], message=message, reason=reason)
    return pb.InvokeBufferedStreamResponse(id=ident, error=error)


def _is_last(answer: pb.InvokeBufferedStreamResponse) -> bool:
    """Whether `answer` is a call's last one (which frees its place): not a part, not
    `draining`."""
    return answer.WhichOneof("result") not in (None, "part")


class _Window:
    """How much more of a streamed call's body may be sent before the caller credits it."""

    __slots__ = ("_left", "_open")

    def __init__(self, size: int) -> None:
        self._left = size
        self._open = asyncio.Event()
        self._open.set()

    async def take(self, size: int) -> None:
        """Wait until some window is left, then take `size` (it may go below zero once)."""
        await self._open.wait()
        self._left -= size
        if self._left <= 0:
            self._open.clear()

    def give(self, size: int) -> None:
        self._left += size
        if self._left > 0:
            self._open.set()


async def answer_invoke_stream(
    requests: AsyncIterator[pb.InvokeBufferedStreamRequest],
    invoke: InvokeOne,
    invoke_streamed: InvokeStreamed | None = None,
    max_in_flight: int = MAX_IN_FLIGHT,
    stop: asyncio.Event | None = None,
    window: int = STREAM_WINDOW,
    answers_together: bool = False,
) -> AsyncIterator[pb.InvokeBufferedStreamResponse]:
    """The answers to the calls `requests` start, each as soon as it is ready (with
    `answers_together`, those ready together in one message: the caller said it reads `more`);
    ends when the caller has closed its side and every call read is answered.

    When `stop` is set (the router is stopping) the caller is told first, in a `draining`
    message, and closes its side (once its calls are answered: its cancels are still read);
    calls read until then still run. The stream ends only after
    the caller closed its side, so no message of the caller's is in flight when it ends (one
    would make grpc.aio report the stream's end as INTERNAL at the caller). A caller that never
    closes its side is cut off when the server's shutdown grace ends."""
    stream: StreamAnswers[pb.InvokeBufferedStreamResponse] = StreamAnswers(max_in_flight)
    answers, slots = stream.answers, stream.slots
    if invoke_streamed is not None:
        answers.put_nowait(TAKES_STREAMED)
    working: dict[int, asyncio.Task[None]] = {}
    cancelled: set[int] = set()
    windows: dict[int, _Window] = {}

    async def answer_buffered(
        ident: int, message: pb.InvokeBufferedStreamRequest, timeout: float | None
    ) -> Any:
        reply = await invoke(message.call, timeout)
        return pb.InvokeBufferedStreamResponse(id=ident, response=reply)

    async def answer_streamed(
        ident: int, message: pb.InvokeBufferedStreamRequest, timeout: float | None
    ) -> Any:
        assert invoke_streamed is not None
        context = CallContext(timeout)
        credit = windows[ident]
        parts = invoke_streamed(message.stream, context)
        try:
            async for part in parts:
                if part.HasField("head"):
                    answers.put_nowait(
                        pb.InvokeBufferedStreamResponse(
                            id=ident, part=part, warnings=context.warnings
                        )
                    )
                    continue
                await credit.take(len(part.chunk))
                answers.put_nowait(pb.InvokeBufferedStreamResponse(id=ident, part=part))
        finally:
            # Parked at `await credit.take` its generator is not closed by the cancellation:
            # closing it leaves the upstream request at once.
            await parts.aclose()
        return pb.InvokeBufferedStreamResponse(id=ident, end=True)

    async def run(message: pb.InvokeBufferedStreamRequest) -> None:
        ident = message.id
        streamed = message.HasField("stream")
        method = INVOKE if streamed else INVOKE_BUFFERED
        request = begin_request(message.request_id)
        timeout = message.timeout_ms / 1000 if message.timeout_ms else None
        code = grpc.StatusCode.OK
        try:
            async with asyncio.timeout(timeout) as within:
                answer = answer_streamed if streamed else answer_buffered
                result = await answer(ident, message, timeout)
        except asyncio.CancelledError:
            if ident not in cancelled:
                # The stream itself is ending: nobody is left to answer; the log still says.
                stream.ended(method, grpc.StatusCode.CANCELLED, request)
                raise
            code = grpc.StatusCode.CANCELLED
            result = _error(ident, code, "the call was cancelled")
        except TimeoutError as err:
            if within.expired():
                code = grpc.StatusCode.DEADLINE_EXCEEDED
                result = _error(ident, code, "deadline exceeded")
            else:  # raised inside the call: whatever the unary RPC would make of it
                code, text, reason = status_of(err, METHOD)
                result = _error(ident, code, text, reason)
        except Exception as err:
            code, text, reason = status_of(err, METHOD)
            result = _error(ident, code, text, reason)
        finally:
            working.pop(ident, None)
            cancelled.discard(ident)
            windows.pop(ident, None)
        # Exactly one last answer per call: each one taken frees one place.
        stream.answer(result, method, code, request)

    def cancel(ident: int) -> None:
        task = working.get(ident)
        if task is not None and ident not in cancelled:
            cancelled.add(ident)
            task.cancel()
            task.add_done_callback(lambda _: never_ran(ident, task))

    def never_ran(ident: int, task: asyncio.Task[None]) -> None:
        # A task cancelled before its first step never runs `run` (not even its `finally`):
        # its cancel came with it. It is answered here, so that its place is freed.
        if working.get(ident) is task:
            del working[ident]
            cancelled.discard(ident)
            method = INVOKE if windows.pop(ident, None) is not None else INVOKE_BUFFERED
            answers.put_nowait(_error(ident, grpc.StatusCode.CANCELLED, "the call was cancelled"))
            record_streamed_request(method, grpc.StatusCode.CANCELLED, time.perf_counter())

    def refuse(ident: int, text: str) -> None:
        answers.put_nowait(_error(ident, grpc.StatusCode.INVALID_ARGUMENT, text))

    async def read() -> None:
        async for message in requests:
            kind = message.WhichOneof("kind")
            if kind == "credit":
                if (credit := windows.get(message.id)) is not None:
                    credit.give(message.credit)
                continue
            if kind not in ("call", "stream"):
                if message.cancel:
                    cancel(message.id)
                continue
            await slots.acquire()
            if message.id in working:
                refuse(message.id, "a call with this id is already in flight on the stream")
            elif kind == "stream" and invoke_streamed is None:
                refuse(message.id, "this stream takes no streamed call")
            else:
                if kind == "stream":  # credit may come before its task first runs
                    windows[message.id] = _Window(window)
                working[message.id] = asyncio.ensure_future(run(message))
        if working:
            await asyncio.wait(set(working.values()))

    def drain() -> None:
        answers.put_nowait(DRAINING)  # the caller closes its side; its calls still run

    reader = stream.start(read, stop, drain)
    try:
        carry: Any = _NOTHING  # taken from the queue, for the next message (in order)
        while True:
            item = carry if carry is not _NOTHING else await answers.get()
            carry = _NOTHING
            if item is END:
                break
            if item is DRAINING or item is TAKES_STREAMED:  # not an answer: alone, no place
                yield item
                continue
            # What else is ready goes in the same message, while it fits in `BATCH_BYTES` (sizes
            # are measured only then: at low load the queue holds one answer at a time).
            together: list[pb.InvokeBufferedStreamResponse] = []
            if answers_together and not answers.empty():
                size = item.ByteSize()
                while not answers.empty():
                    queued = answers.get_nowait()
                    if queued is END or queued is DRAINING:
                        carry = queued
                        break
                    size += queued.ByteSize()
                    if size > BATCH_BYTES:
                        carry = queued
                        break
                    together.append(queued)
            last = _is_last(item) + sum(1 for answer in together if _is_last(answer))
            if together:
                item.more.extend(together)  # each as if it came alone
            yield item
            for _ in range(last):
                slots.release()  # gRPC took the answers: a place for each next call
        await reader  # the caller's side ended in an error: the stream ends with it
    finally:
        stream.close(working.values())


class CallContext:
    """What the servicer's `Invoke` and `InvokeBuffered` use of their context, for a call on a
    stream: its deadline; the warnings `Invoke` sends as initial metadata are kept for its
    head's answer. Its trailing metadata goes nowhere: the warnings are in the answer."""

    __slots__ = ("_deadline", "warnings")

    def __init__(self, timeout: float | None) -> None:
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self.warnings: list[str] = []

    def time_remaining(self) -> float | None:
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - time.monotonic())

    def set_trailing_metadata(self, metadata: Any) -> None:
        pass

    async def send_initial_metadata(self, metadata: Any) -> None:
        self.warnings = [value for key, value in metadata if key == CREDENTIAL_WARNING_KEY]

    def add_done_callback(self, callback: Any) -> None:
        pass  # the call's task closes its `Invoke` itself when it ends


class StreamingRouterServicer(RouterServicer):
    """`RouterServicer` with `InvokeBufferedStream`: each call on a stream runs through the
    servicer's own `InvokeBuffered`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._draining = asyncio.Event()  # set by `drain`

    async def InvokeBufferedStream(  # noqa: N802 - the RPC's name
        self,
        requests: AsyncIterator[pb.InvokeBufferedStreamRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.InvokeBufferedStreamResponse]:
        def invoke(
            request: pb.InvokeBufferedRequest, timeout: float | None
        ) -> Awaitable[pb.InvokeBufferedResponse]:
            call_context = cast(grpc.aio.ServicerContext, CallContext(timeout))
            return self.InvokeBuffered(request, call_context)

        def invoke_streamed(
            request: pb.InvokeRequest, context: CallContext
        ) -> AsyncGenerator[pb.InvokeResponse, None]:
            return self.Invoke(request, cast(grpc.aio.ServicerContext, context))

        metadata = context.invocation_metadata() or ()
        together = any(key == ANSWERS_TOGETHER_KEY for key, _ in metadata)
        async for answer in answer_invoke_stream(
            requests, invoke, invoke_streamed, stop=self._draining, answers_together=together
        ):
            yield answer

    def drain(self) -> None:
        """The router is stopping: each `InvokeBufferedStream` tells its caller (`draining`),
        which closes its side once its calls are answered; then the stream ends OK."""
        self._draining.set()
