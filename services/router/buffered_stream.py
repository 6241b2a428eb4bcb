"""`InvokeBufferedStream`: many `InvokeBuffered` calls on one stream, each answered as the unary
RPC would answer it.

A unary call costs each side a gRPC call of its own: on this project's 2-core machine a bare
grpc.aio unary round trip took about 0.54 ms where a message each way on an open stream took
0.23 ms, and the router's per-call share of the interceptor, call object and task goes with it.
The gateway keeps a few of these streams (`services.gateway.router_streams`).

The caller was authenticated (right `invoke`) when the stream opened (`grpc_handlers`). Each
call then runs as a task of its own, with its request id bound for the log lines about it and
its own deadline, through the servicer's own `InvokeBuffered` (`StreamingRouterServicer`): the
same resolve, substitution, checks, upstream request and answer. Its answer carries its id. A
call that fails is answered with the status the unary RPC would have ended with
(`grpc_handlers.status_of`: same code, message and reason); one past its deadline with
DEADLINE_EXCEEDED; one the caller cancelled with CANCELLED (its upstream request is closed at
once). Each call is counted in the RPC metrics and has the access-log line of a unary
`InvokeBuffered`, with `via` naming the stream.

At most `MAX_IN_FLIGHT` calls are in flight per stream, a place being freed when gRPC has taken
the call's answer: beyond that the next request is read only when a call was answered, so a
caller that sends faster than the router answers, or never reads, is held back by the stream's
flow control instead of piling up tasks and answers here. A caller that counts its own calls in
flight against the same limit (the gateway does) never meets it, so its cancellations are read
at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import grpc
import grpc.aio
from aicreds.router.v1 import router_pb2 as pb

from services.common.grpc_handlers import record_streamed_request, status_of
from services.common.request_context import bind_request_id, new_request_id
from services.router.servicer import RouterServicer

MAX_IN_FLIGHT = 1000
"""Calls in flight per stream (the proto's promise)."""

METHOD = "/aicreds.router.v1.RouterService/InvokeBufferedStream"
# Each call's access-log line is that of the unary call it stands for (`via` the stream).
INVOKE_BUFFERED = "/aicreds.router.v1.RouterService/InvokeBuffered"
# A request id arrives in a message, not in metadata: bounded before it goes on log lines.
_MAX_REQUEST_ID = 128

InvokeOne = Callable[[pb.InvokeBufferedRequest, float | None], Awaitable[pb.InvokeBufferedResponse]]
"""One buffered call: the request and its timeout in seconds (None: the router's default)."""


DRAINING = pb.InvokeBufferedStreamResponse(draining=True)
"""Sent once when the router begins to stop: the caller sends no further call and closes
its side (once its calls are answered; it may still cancel them)."""


def _error(ident: int, code: grpc.StatusCode, message: str, reason: str = "") -> Any:
    error = pb.CallError(code=code.value[0], message=message, reason=reason)
    return pb.InvokeBufferedStreamResponse(id=ident, error=error)


async def answer_invoke_stream(
    requests: AsyncIterator[pb.InvokeBufferedStreamRequest],
    invoke: InvokeOne,
    max_in_flight: int = MAX_IN_FLIGHT,
    stop: asyncio.Event | None = None,
) -> AsyncIterator[pb.InvokeBufferedStreamResponse]:
    """The answers to the calls `requests` start, each as soon as it is ready; ends when the
    caller has closed its side and every call read is answered.

    When `stop` is set (the router is stopping) the caller is told first, in a `draining`
    message, and closes its side (once its calls are answered: its cancels are still read);
    calls read until then still run. The stream ends only after
    the caller closed its side, so no message of the caller's is in flight when it ends (one
    would make grpc.aio report the stream's end as INTERNAL at the caller). A caller that never
    closes its side is cut off when the server's shutdown grace ends."""
    answers: asyncio.Queue[pb.InvokeBufferedStreamResponse | None] = asyncio.Queue()
    slots = asyncio.Semaphore(max_in_flight)
    working: dict[int, asyncio.Task[None]] = {}
    cancelled: set[int] = set()

    async def run(message: pb.InvokeBufferedStreamRequest) -> None:
        # A task of its own: its request id stays its own (a copy of the stream's context).
        ident = message.id
        start = time.perf_counter()
        bind_request_id(message.request_id[:_MAX_REQUEST_ID] or new_request_id())
        timeout = message.timeout_ms / 1000 if message.timeout_ms else None
        code = grpc.StatusCode.OK
        try:
            async with asyncio.timeout(timeout) as within:
                reply = await invoke(message.call, timeout)
            result = pb.InvokeBufferedStreamResponse(id=ident, response=reply)
        except asyncio.CancelledError:
            if ident not in cancelled:
                # The stream itself is ending: nobody is left to answer; the log still says.
                record_streamed_request(INVOKE_BUFFERED, grpc.StatusCode.CANCELLED, start)
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
        # Exactly one answer per call: each answer taken frees one place.
        answers.put_nowait(result)
        record_streamed_request(INVOKE_BUFFERED, code, start)

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
            answers.put_nowait(_error(ident, grpc.StatusCode.CANCELLED, "the call was cancelled"))
            record_streamed_request(INVOKE_BUFFERED, grpc.StatusCode.CANCELLED, time.perf_counter())

    async def read() -> None:
        try:
            async for message in requests:
                if message.WhichOneof("kind") != "call":
                    if message.cancel:
                        cancel(message.id)
                    continue
                await slots.acquire()
                if message.id in working:
                    answers.put_nowait(
                        _error(
                            message.id,
                            grpc.StatusCode.INVALID_ARGUMENT,
                            "a call with this id is already in flight on the stream",
                        )
                    )
                    continue
                working[message.id] = asyncio.ensure_future(run(message))
            if working:
                await asyncio.wait(set(working.values()))
        finally:
            answers.put_nowait(None)

    reader = asyncio.ensure_future(read())

    def drain() -> None:
        if not reader.done():
            # Not a call's answer: it takes no place (the answer loop frees none for it).
            answers.put_nowait(DRAINING)

    watcher = asyncio.ensure_future(stop.wait()) if stop is not None else None
    if watcher is not None:
        watcher.add_done_callback(lambda _: drain())
    try:
        while (item := await answers.get()) is not None:
            yield item
            if item is not DRAINING:
                slots.release()  # gRPC took the answer: a place for the next call
        await reader  # the caller's side ended in an error: the stream ends with it
    finally:
        if watcher is not None:
            watcher.cancel()
        reader.cancel()
        for task in list(working.values()):
            task.cancel()


class _CallContext:
    """What `RouterServicer.InvokeBuffered` uses of its context, for a call on a stream: its
    deadline. Its trailing metadata goes nowhere: the warnings are in the answer."""

    __slots__ = ("_deadline",)

    def __init__(self, timeout: float | None) -> None:
        self._deadline = None if timeout is None else time.monotonic() + timeout

    def time_remaining(self) -> float | None:
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - time.monotonic())

    def set_trailing_metadata(self, metadata: Any) -> None:
        pass

    async def send_initial_metadata(self, metadata: Any) -> None:
        pass


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
            call_context = cast(grpc.aio.ServicerContext, _CallContext(timeout))
            return self.InvokeBuffered(request, call_context)

        async for answer in answer_invoke_stream(requests, invoke, stop=self._draining):
            yield answer

    def drain(self) -> None:
        """The router is stopping: each `InvokeBufferedStream` tells its caller (`draining`),
        which closes its side once its calls are answered; then the stream ends OK."""
        self._draining.set()
