"""`ResolveStream`: many `Resolve`s on one stream, each answered as the unary RPC would answer it.

The caller was authenticated (right `resolve`) when the stream opened (`grpc_handlers`). Each
request then runs through the same `Resolve` the unary RPC runs (audited before it answers); its
answer carries the request's id. A request that fails is answered with the status the unary RPC
would have ended with (`grpc_handlers.status_of`: same code, message and reason), and the stream
goes on. Each request has the access-log line of a unary `Resolve`, with `via` naming the stream.

The rules this stream shares with the router's `InvokeBufferedStream` (a task per request, its
reports after its answer, at most `MAX_IN_FLIGHT` requests in flight, a place freed when gRPC has
taken the answer) are in `services.common.stream_answers`. Its own: each answer is alone in its
message, and a drain stops the reading (the reader is cancelled) while the requests read are
still answered.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
from aicreds.vault.v1 import credentials_pb2 as pb

from services.common.grpc_handlers import status_of
from services.common.stream_answers import END, StreamAnswers, begin_request

MAX_IN_FLIGHT = 100
"""Requests worked on at once per stream (the proto's promise)."""

METHOD = "/aicreds.vault.v1.CredentialService/ResolveStream"
# Each request's access-log line is that of the unary call it stands for (`via` the stream).
RESOLVE = "/aicreds.vault.v1.CredentialService/Resolve"

ResolveInto = Callable[[pb.ResolveRequest], Awaitable[pb.ResolveResponse]]
"""The unary `Resolve` of the stream's caller: a request in, its reply out (or an error)."""


async def answer_resolve_stream(
    requests: AsyncIterator[pb.ResolveStreamRequest],
    resolve: ResolveInto,
    max_in_flight: int = MAX_IN_FLIGHT,
    stop: asyncio.Event | None = None,
) -> AsyncIterator[pb.ResolveStreamResponse]:
    """The answers to `requests`, each as soon as it is ready; ends when the caller has closed
    its side, or `stop` is set (the vault is draining: no further request is read), and every
    request read is answered."""
    stream: StreamAnswers[pb.ResolveStreamResponse] = StreamAnswers(max_in_flight)
    answers, slots = stream.answers, stream.slots
    working: set[asyncio.Task[None]] = set()

    async def answer(message: pb.ResolveStreamRequest) -> None:
        request = begin_request(message.request_id)
        try:
            reply = await resolve(message.request)
        except Exception as err:
            code, text, reason = status_of(err, METHOD)
            error = pb.ResolveError(code=code.value[0], message=text, reason=reason)
            result = pb.ResolveStreamResponse(id=message.id, error=error)
        else:
            code, result = (
                grpc.StatusCode.OK,
                pb.ResolveStreamResponse(id=message.id, response=reply),
            )
        # Exactly one answer per request: each answer taken frees one place.
        stream.answer(result, RESOLVE, code, request)

    def stopping() -> bool:
        return stop is not None and stop.is_set()

    reading = True  # drain cuts the reading short, never the wait for the answers

    async def read() -> None:
        nonlocal reading
        try:
            async for message in requests:
                await slots.acquire()
                task = asyncio.ensure_future(answer(message))
                working.add(task)
                task.add_done_callback(working.discard)
        except asyncio.CancelledError:
            if not stopping():
                raise
        reading = False
        while working:
            try:
                await asyncio.wait(set(working))
            except asyncio.CancelledError:
                if not stopping():  # the drain's cancel, delivered late: keep waiting
                    raise

    def drain() -> None:
        if reading:
            reader.cancel()  # reads no further request; answers those it read, then ends

    reader = stream.start(read, stop, drain)
    try:
        while (item := await answers.get()) is not END:
            yield item
            slots.release()  # gRPC took the answer: a place for the next request
        await reader  # the caller's side ended in an error: the stream ends with it
    finally:
        stream.close(working)
