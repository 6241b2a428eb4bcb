"""`ResolveStream`: many `Resolve`s on one stream, each answered as the unary RPC would answer it.

The caller was authenticated (right `resolve`) when the stream opened (`grpc_handlers`). Each
request then runs as a task of its own, with its request id bound for the log lines about it,
through the same `Resolve` the unary RPC runs (audited before it answers); its answer carries the
request's id. A request that fails is answered with the status the unary RPC would have ended
with (`grpc_handlers.status_of`: same code, message and reason), and the stream goes on. Each
request is counted in the RPC metrics and has the access-log line of a unary `Resolve`, with
`via` naming the stream.

At most `MAX_IN_FLIGHT` requests are worked on at once: the next is read from the stream only
when one of them is answered, so a caller sending faster than the vault answers is held back by
the stream's flow control instead of piling up tasks here. A request is answered when gRPC has
taken its answer (the `yield` returned), not when the answer is ready: a caller that sends and
never reads would otherwise have every request it sends resolved, audited and its answer, with
the credential values, queued here without bound.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
from aicreds.vault.v1 import credentials_pb2 as pb

from services.common.after_answer import answered, defer_until_answered
from services.common.grpc_handlers import record_streamed_request, status_of
from services.common.request_context import bind_request_id, new_request_id

MAX_IN_FLIGHT = 100
"""Requests worked on at once per stream (the proto's promise)."""

METHOD = "/aicreds.vault.v1.CredentialService/ResolveStream"
# Each request's access-log line is that of the unary call it stands for (`via` the stream).
RESOLVE = "/aicreds.vault.v1.CredentialService/Resolve"
# A request id arrives in a message, not in metadata: bounded before it goes on log lines.
_MAX_REQUEST_ID = 128

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
    answers: asyncio.Queue[pb.ResolveStreamResponse | None] = asyncio.Queue()
    slots = asyncio.Semaphore(max_in_flight)
    working: set[asyncio.Task[None]] = set()

    async def answer(message: pb.ResolveStreamRequest) -> None:
        # A task of its own: its request id stays its own (a copy of the stream's context).
        deferred = defer_until_answered()
        start = time.perf_counter()
        bind_request_id(message.request_id[:_MAX_REQUEST_ID] or new_request_id())
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
        answers.put_nowait(result)
        record_streamed_request(RESOLVE, code, start)
        answered(deferred)  # its access line and metrics: after the writer sent the answer

    def stopping() -> bool:
        return stop is not None and stop.is_set()

    reading = True  # drain cuts the reading short, never the wait for the answers

    async def read() -> None:
        nonlocal reading
        try:
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
        finally:
            answers.put_nowait(None)

    reader = asyncio.ensure_future(read())

    def drain() -> None:
        if reading and not reader.done():
            reader.cancel()  # reads no further request; answers those it read, then ends

    watcher = asyncio.ensure_future(stop.wait()) if stop is not None else None
    if watcher is not None:
        watcher.add_done_callback(lambda _: drain())
    try:
        while (item := await answers.get()) is not None:
            yield item
            slots.release()  # gRPC took the answer: a place for the next request
        await reader  # the caller's side ended in an error: the stream ends with it
    finally:
        if watcher is not None:
            watcher.cancel()
        reader.cancel()
        for task in working:
            task.cancel()
