"""Answering many requests on one long-lived bidi stream: the server's side.

The vault's `ResolveStream` (`services.vault.servicers.resolve_stream`) and the router's
`InvokeBufferedStream` (`services.router.buffered_stream`) each answer requests that come one
after another on a stream, each as the unary RPC would answer it. Both do so by the rules here;
what is each one's own (how it drains, the router's cancels, credit and answers put together)
stays in its module.

- **A task per request.** Each request runs as a task of its own (`begin_request` first), so
  its request id, bound for the log lines about it, and its deferred reports stay its own (a
  copy of the stream's context). The id comes in a message, not in metadata: it is bounded
  before it goes on a log line, and a request without one gets a new one.
- **Its answer, then its reports.** A request's (last) answer goes in the stream's queue
  (`StreamAnswers.answer`) and the request is counted in the RPC metrics, with the access-log
  line of the unary call it stands for (`via` naming the stream), from the event loop right after
  the writer sent the answer (`after_answer`): reporting first would delay the answer.
- **Bounded in flight.** A request takes a place (`slots`) before its task starts; the stream's
  writer frees it when gRPC has taken the request's last answer (its `yield` returned), not when
  the answer is ready. The next request is read only when a place is free, so a caller that sends
  faster than the server answers, or never reads, is held back by the stream's flow control
  instead of piling up tasks and answers (with their credentials) here.
- **A reader and a watcher.** The requests are read by a task of their own (`start`), which puts
  `END` in the queue when it ends: once every request it read is answered, or at once if the
  caller's side ended in an error (the writer then ends the stream with that error, and the
  requests still in flight are cancelled). When `stop` is set the service's `drain` runs,
  unless the reader has already ended (never when the stream ends without a stop). When the
  stream ends, for whatever reason, the reader, the watcher and the requests still in flight are
  cancelled (`close`).

Nothing here runs per request beyond two plain calls (`begin_request`, `StreamAnswers.answer`):
no task, queue or await of its own, since these streams carry thousands of calls a second.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Generic, NamedTuple, TypeVar

import grpc

from services.common.after_answer import Deferred, answered, defer_until_answered
from services.common.grpc_handlers import record_streamed_request
from services.common.request_context import bind_request_id, new_request_id

A = TypeVar("A")

END = None
"""In the queue of answers: every request read is answered, the stream ends."""

MAX_REQUEST_ID = 128
"""Characters of a request id from a message that go on log lines."""


class Request(NamedTuple):
    """A request begun on a stream: what its task defers until it is answered, and when it
    began (`time.perf_counter()`)."""

    deferred: Deferred
    start: float


def begin_request(request_id: str) -> Request:
    """A request read from a stream begins, first thing in a task of its own: from here on its
    reports wait for its answer (`defer_until_answered`), and its `request_id` is bound (bounded;
    a new one when empty)."""
    deferred = defer_until_answered()
    start = time.perf_counter()
    bind_request_id(request_id[:MAX_REQUEST_ID] or new_request_id())
    return Request(deferred, start)


class StreamAnswers(Generic[A]):
    """One stream's answers, queued for its writer; its places for requests in flight; the tasks
    that read its requests and watch for a stop."""

    __slots__ = ("answers", "slots", "_reader", "_watcher")

    def __init__(self, max_in_flight: int) -> None:
        self.answers: asyncio.Queue[A | None] = asyncio.Queue()
        """What the writer sends, in order, until `END`."""
        self.slots = asyncio.Semaphore(max_in_flight)
        """A place per request in flight: taken before its task starts, freed by the writer
        once gRPC took its last answer."""
        self._reader: asyncio.Task[None] | None = None
        self._watcher: asyncio.Future[Any] | None = None

    def answer(self, answer: A, method: str, code: grpc.StatusCode, request: Request) -> None:
        """The `request`'s (last) `answer`: queued for the writer, then the request `ended`."""
        self.answers.put_nowait(answer)
        self.ended(method, code, request)

    @staticmethod
    def ended(method: str, code: grpc.StatusCode, request: Request) -> None:
        """The `request` ended with `code`: it is recorded as a call of `method`, and what its
        task deferred runs right after the writer's step (at once if nothing is queued)."""
        record_streamed_request(method, code, request.start)
        answered(request.deferred)

    def start(
        self,
        read: Callable[[], Awaitable[object]],
        stop: asyncio.Event | None,
        drain: Callable[[], None],
    ) -> asyncio.Task[None]:
        """Run `read()` (it reads the requests and returns once those it read are answered) in
        the reader task returned, which then queues `END`; call `drain` when `stop` is set,
        unless the reader has ended by then."""
        reader = asyncio.ensure_future(self._read_then_end(read))
        self._reader = reader
        if stop is not None:

            def stopped(_: object) -> None:
                # Also called when `close` cancels the watcher: that is no stop.
                if stop.is_set() and not reader.done():
                    drain()

            self._watcher = asyncio.ensure_future(stop.wait())
            self._watcher.add_done_callback(stopped)
        return reader

    async def _read_then_end(self, read: Callable[[], Awaitable[object]]) -> None:
        try:
            await read()
        finally:
            self.answers.put_nowait(END)

    def close(self, working: Iterable[asyncio.Task[Any]]) -> None:
        """The stream ends: cancel the watcher, the reader and the requests' tasks `working`."""
        if self._watcher is not None:
            self._watcher.cancel()
        if self._reader is not None:
            self._reader.cancel()
        for task in list(working):
            task.cancel()
