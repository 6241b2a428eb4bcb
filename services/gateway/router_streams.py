"""The gateway's long-lived streams to the router's `InvokeBufferedStream`.

A non-streamed model call is one `InvokeBuffered` at the router, a streamed one an `Invoke`. As
its own RPC each costs a gRPC call on each side: on this project's 2-core machine a bare
grpc.aio unary round trip took about 0.54 ms where a message each way on an open stream took
0.23 ms. So the gateway keeps a few streams per router channel and sends each call as one
message on the next one in turn (`RouterStreams.start`, `RouterStreams.start_stream`); the
router runs it exactly as the RPC (same checks, answer, errors;
`services.router.buffered_stream`), and sends the answers that are ready together in one
message. A streamed call's parts (head, chunks, then its end) come with its id; the router
sends at most a window of its body beyond what the call has credited (`StreamedInvoke.read`
credits what it hands on), so a slow client holds back only its own call.

Streams are opened through the channel's round robin, so they land on the router replicas in
turn, and one is replaced after `MAX_AGE_S` (it finishes the calls it carries first), so that
replicas added since are reached.

The pattern is that of the router's streams to the vault (`services.router.resolve_stream`),
with what a model call needs besides:

- **Cancellation.** `StreamedCall.cancel()` (the client went away) sends a cancel for the call's
  id, and the router closes its upstream request, as cancelling the unary RPC does. A call
  given up on (cancelled, or past its deadline) while its message still waits in the outbox is
  not written at all.
- **Deadline.** The call carries the time it has left when it is written; the router ends it
  with DEADLINE_EXCEEDED when that is over, and the gateway gives up on it at its deadline on
  its own (a late answer is dropped).
- **Never a wait for a place.** A stream carries at most `MAX_IN_FLIGHT` calls until their
  (last) answers arrive (the router's own limit, so the router never stops reading a stream of ours
  and a cancel is read at once). When no stream has a place, `start` returns None and the call
  goes as a unary `InvokeBuffered` (`RouterClient.invoke_buffered`), as does a body over
  `STREAM_BODY_LIMIT` (one large message would hold up every call behind it on its stream) and,
  with tracing on, every call (a unary call carries its span's `traceparent`); a streamed call
  goes as a unary `Invoke` under the same conditions (`RouterClient.invoke_stream`).
- **A stopping router.** It sends `draining` on each stream: the stream takes no new call
  (the next goes on another stream, or unary) and closes its side once the calls it carries
  are answered (until then their cancels still reach the router, which reads them); the router
  answers every call it read and then ends the stream OK.
- **Sent again only when it never left.** A model call may cost money upstream, so a call whose
  stream ended before its answer fails with the stream's status (UNAVAILABLE when grpc.aio
  made it INTERNAL because the stream ended under one of our writes: a unary call whose
  connection breaks fails UNAVAILABLE too) - unless it was never sent:
  its message was not yet written when the stream ended (a stream refused or broken before it
  was accepted, or ended while the call waited in the outbox), or the stream ended OK (the
  router ends a stream OK only after the gateway closed its side and every call it read was
  answered, so an unanswered call was never read). That one is sent again as a unary call
  (which the channel's balancing sends to a replica that is not stopping, and retries by itself
  if it never reached one). A router that does not know the stream (UNIMPLEMENTED: an older
  router) read nothing either: its calls go as unary calls, and so do all calls for
  `UNSUPPORTED_RETRY_S`.

A stream's first message waits for the router to accept it (initial metadata, sent by
`services.common.grpc_handlers` once its checks pass): a message in flight when the router
refuses the stream makes grpc.aio report INTERNAL instead of the refusal (UNAUTHENTICATED,
PERMISSION_DENIED), which every call on it would then report. So routers are upgraded before
their gateways: a router serving this stream without accepting it first would get no call.

The call objects behave as grpc.aio's unary call does for `BufferedAnswer`: awaiting one gives
the `InvokeBufferedResponse` or raises `grpc.aio.AioRpcError` with the code, message and
`x-error-reason` the unary call would have had, so errors are mapped in the one place they are
(`errors.from_rpc_error`).
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
from collections.abc import Callable, Generator
from typing import Any, Protocol, TypeVar

import grpc
import grpc.aio
from aicreds.router.v1 import router_pb2 as pb

from services.common.error_reason import reason_metadata
from services.common.grpc_handlers import CODE_BY_NUMBER
from services.common.invoke_streams import ANSWERS_TOGETHER_KEY, CREDENTIAL_WARNING_KEY
from services.common.request_context import (
    REQUEST_ID_KEY,
    bind_request_id,
    current_request_id,
    new_request_id,
)
from services.common.stream_outbox import OUTBOX_END, write_outbox

STREAMS = 4
"""Streams per router channel: enough to reach a few router replicas in turn."""
MAX_IN_FLIGHT = 1000
"""Calls in flight per stream: the router's limit (`services.router.buffered_stream`)."""
MAX_AGE_S = 60.0
"""A stream takes no new call after this long; the next one goes on a new stream."""
UNSUPPORTED_RETRY_S = 60.0
"""After a router answered UNIMPLEMENTED, how long calls go unary before a stream is tried
again (a router upgraded meanwhile gets streams)."""
STREAM_BODY_LIMIT = 1024 * 1024
"""Request bodies above this many bytes go as unary calls."""
CREDIT_AT = 64 * 1024
"""A streamed call credits the router once it has passed on this many body bytes (the router
sends at most 256 KiB beyond the credit: `services.router.buffered_stream.STREAM_WINDOW`)."""

# The details grpc.aio gives a call whose message could not be sent (`set_internal_error`): it
# replaces the call's status, e.g. UNAVAILABLE from a router that went away, with INTERNAL.
_WRITE_FAILED = "Internal error from Core"


class BufferedCall(Protocol):
    """A buffered call in flight: awaited, its answer (or `grpc.aio.AioRpcError`); `cancel()`
    stops it. grpc.aio's unary call is one, and so is `StreamedCall`."""

    def __await__(self) -> Generator[Any, None, pb.InvokeBufferedResponse]: ...

    def cancel(self) -> bool: ...


Unary = Callable[[pb.InvokeBufferedRequest, float], BufferedCall]
"""The unary `InvokeBuffered`: a request and its timeout in seconds."""


class StreamCall(Protocol):
    """A streamed call in flight, read as grpc.aio's `UnaryStreamCall` is: `read()` gives
    `Invoke`'s messages in order, then `grpc.aio.EOF`, or raises `grpc.aio.AioRpcError`;
    `initial_metadata()` carries the credential warnings once the head was read; `cancel()`
    stops it (a pending `read()` raises `asyncio.CancelledError`). grpc.aio's call is one, and
    so is `StreamedInvoke`."""

    async def read(self) -> Any: ...

    async def initial_metadata(self) -> Any: ...

    def cancel(self) -> bool: ...


UnaryStream = Callable[[pb.InvokeRequest, float], StreamCall]
"""The unary-stream `Invoke`: a request and its timeout in seconds."""


def _rpc_error(code: grpc.StatusCode, message: str, reason: str = "") -> grpc.aio.AioRpcError:
    """The error grpc.aio's unary call would raise for this status."""
    return grpc.aio.AioRpcError(
        code,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(*reason_metadata(reason)),
        details=message,
    )


def _call_error(error: pb.CallError) -> grpc.aio.AioRpcError:
    """The error a call that the router answered with `error` raises."""
    code = CODE_BY_NUMBER.get(error.code, grpc.StatusCode.UNKNOWN)
    return _rpc_error(code, error.message, error.reason)


R = TypeVar("R")


def _in_own_context(request_id: str, start: Callable[..., R], *args: Any) -> R:
    """`start(*args)` with `request_id` bound: a call sent again unary is started by the
    stream's reader, whose context is that of the request that opened the stream (the channel
    puts the current request id on each call)."""
    context = contextvars.copy_context()
    context.run(bind_request_id, request_id)
    return context.run(start, *args)


class _OnStream:
    """What a call on a stream keeps whatever its kind: its request, request id and deadline
    (a timer gives up on it then), the stream and id it went out as, and the unary call it
    became if the stream could not take it after all."""

    __slots__ = ("request", "request_id", "deadline", "_stream", "_id", "_timer", "_unary")

    def __init__(self, request: Any, request_id: str, deadline: float) -> None:
        self.request = request
        self.request_id = request_id
        self.deadline = deadline  # loop time
        self._stream: _Stream | None = None
        self._id = 0
        self._timer = asyncio.get_running_loop().call_at(deadline, self._expire)
        self._unary: Any = None

    def done(self) -> bool:
        raise NotImplementedError

    def _expire(self) -> None:
        raise NotImplementedError

    def _start_unary(self, unary: Callable[[Any, float], R]) -> R | None:
        """`unary` started with the time the call has left, under its own request id; None if
        no time is left (it expired)."""
        self._stream = None
        remaining = self.deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            self._expire()
            return None
        call = _in_own_context(self.request_id, unary, self.request, remaining)
        self._unary = call
        return call

    def _let_go(self) -> None:
        """The call was given up on: the router should stop it too."""
        if self._stream is not None:
            self._stream.cancel(self._id)  # its place stays taken until the router answers
        elif self._unary is not None:
            self._unary.cancel()


class StreamedCall(_OnStream):
    """One buffered call sent on a stream (or, if the stream could not take it after all, as a
    unary call): awaitable and cancellable like grpc.aio's unary call."""

    __slots__ = ("_future",)

    def __init__(self, request: pb.InvokeBufferedRequest, request_id: str, deadline: float) -> None:
        super().__init__(request, request_id, deadline)
        loop = asyncio.get_running_loop()
        self._future: asyncio.Future[pb.InvokeBufferedResponse] = loop.create_future()

    def __repr__(self) -> str:
        return f"StreamedCall(id={self._id}, done={self._future.done()})"

    def __await__(self) -> Generator[Any, None, pb.InvokeBufferedResponse]:
        return self._future.__await__()

    def done(self) -> bool:
        return self._future.done()

    def cancel(self) -> bool:
        """Stop the call (its upstream request is closed); False if it had ended."""
        if self._future.done():
            return False
        self._future.cancel()
        self._timer.cancel()
        self._let_go()
        return True

    def sent(self, stream: _Stream, ident: int) -> pb.InvokeBufferedStreamRequest:
        """The call goes on `stream` as `ident`: its message (`timeout_ms` is set when it is
        written: the time it waits in the outbox is not the router's to spend)."""
        self._stream, self._id = stream, ident
        return pb.InvokeBufferedStreamRequest(
            id=ident, call=self.request, request_id=self.request_id
        )

    def take(self, answer: pb.InvokeBufferedStreamResponse) -> bool:
        """`answer` arrived for this call: it is the last (True)."""
        self._stream = None
        self._timer.cancel()
        if self._future.done():
            return True  # given up on already (cancelled, or its deadline)
        if answer.HasField("error"):
            self._future.set_exception(_call_error(answer.error))
        elif answer.HasField("response"):
            self._future.set_result(answer.response)
        else:
            self._future.set_exception(
                _rpc_error(grpc.StatusCode.INTERNAL, "the router answered without a result")
            )
        return True

    def fail(self, error: BaseException) -> None:
        self._stream = None
        self._timer.cancel()
        if not self._future.done():
            self._future.set_exception(error)

    def go_unary(self, unary: Unary) -> None:
        """Send the call as a unary `InvokeBuffered` with the time it has left."""
        self._stream = None
        if self._future.done():
            return
        call = self._start_unary(unary)
        if call is not None:
            asyncio.ensure_future(self._follow(call))

    async def _follow(self, call: BufferedCall) -> None:
        try:
            reply = await call
        except grpc.aio.AioRpcError as err:
            self.fail(err)
        except asyncio.CancelledError:
            pass  # `cancel()` cancelled it: the future is cancelled already
        else:
            self._timer.cancel()
            if not self._future.done():
                self._future.set_result(reply)

    def _expire(self) -> None:
        if self._future.done():
            return
        self._future.set_exception(
            _rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
        )
        self._let_go()


_GO_UNARY = object()
"""In a `StreamedInvoke`'s parts: read on from its unary call from here."""


class StreamedInvoke(_OnStream):
    """One streamed call sent on a stream (or, if the stream could not take it after all, as a
    unary `Invoke`): read, and cancelled, like grpc.aio's `UnaryStreamCall` (`StreamCall`).

    The parts wait here until read; the router sends at most its window of body bytes beyond
    what this call credited, and `read()` credits what it hands on, `CREDIT_AT` bytes at a
    time, so a client that reads slowly holds back only its own call."""

    __slots__ = ("_parts", "_over", "_warnings", "_uncredited", "answered_in_part")

    def __init__(self, request: pb.InvokeRequest, request_id: str, deadline: float) -> None:
        super().__init__(request, request_id, deadline)
        # Parts, then `grpc.aio.EOF` or the error to raise, or `_GO_UNARY`.
        self._parts: asyncio.Queue[Any] = asyncio.Queue()
        self._over = False  # its last answer arrived, or it was given up on
        self._warnings: tuple[str, ...] = ()
        self._uncredited = 0
        self.answered_in_part = False  # a part came: never sent again (the client has some)

    def __repr__(self) -> str:
        return f"StreamedInvoke(id={self._id}, over={self._over})"

    def done(self) -> bool:
        return self._over

    async def read(self) -> Any:
        if self._unary is not None:
            return await self._unary.read()
        item = await self._parts.get()
        if item is _GO_UNARY:
            assert self._unary is not None
            return await self._unary.read()
        if isinstance(item, BaseException):
            self._parts.put_nowait(item)  # every later read raises it too
            raise item
        if item is grpc.aio.EOF:
            self._parts.put_nowait(item)
            return item
        if item.chunk and self._stream is not None:
            self._uncredited += len(item.chunk)
            if self._uncredited >= CREDIT_AT:
                self._stream.credit(self._id, self._uncredited)
                self._uncredited = 0
        return item

    async def initial_metadata(self) -> grpc.aio.Metadata:
        if self._unary is not None:
            return await self._unary.initial_metadata()
        warnings = ((CREDENTIAL_WARNING_KEY, warning) for warning in self._warnings)
        return grpc.aio.Metadata(*warnings)

    def cancel(self) -> bool:
        """Stop the call (its upstream request is closed); False if it had ended."""
        if self._unary is not None:
            return bool(self._unary.cancel())
        if self._over:
            return False
        self._finish(asyncio.CancelledError(), drop_parts=True)
        self._let_go()
        return True

    def sent(self, stream: _Stream, ident: int) -> pb.InvokeBufferedStreamRequest:
        """As `StreamedCall.sent`."""
        self._stream, self._id = stream, ident
        return pb.InvokeBufferedStreamRequest(
            id=ident, stream=self.request, request_id=self.request_id
        )

    def take(self, answer: pb.InvokeBufferedStreamResponse) -> bool:
        """`answer` arrived for this call: a part (False), or its last answer (True)."""
        kind = answer.WhichOneof("result")
        if kind == "part":
            self.answered_in_part = True
            if not self._over:
                if answer.part.HasField("head"):
                    self._warnings = tuple(answer.warnings)
                # A copy: the part would keep the whole message it came in (with the answers
                # of other calls, `more`) for as long as it waits to be read.
                part = pb.InvokeResponse()
                part.CopyFrom(answer.part)
                self._parts.put_nowait(part)
            return False
        self._stream = None
        if kind == "end":
            self._finish(grpc.aio.EOF)
        elif kind == "error":
            self._finish(_call_error(answer.error))
        else:
            self._finish(_rpc_error(grpc.StatusCode.INTERNAL, "the router answered amiss"))
        return True

    def fail(self, error: BaseException) -> None:
        self._stream = None
        self._finish(error)

    def go_unary(self, unary: UnaryStream) -> None:
        """Send the call as a unary `Invoke` with the time it has left (it had no answer)."""
        self._stream = None
        if self._over:
            return
        if self._start_unary(unary) is not None:
            self._timer.cancel()  # the unary call has its own deadline
            self._parts.put_nowait(_GO_UNARY)

    def _finish(self, last: Any, *, drop_parts: bool = False) -> None:
        """The call is over: `last` (EOF or an error) is read after the parts that came, or
        at once (`drop_parts`: it was given up on)."""
        if self._over:
            return
        self._over = True
        self._timer.cancel()
        while drop_parts and not self._parts.empty():
            self._parts.get_nowait()
        self._parts.put_nowait(last)

    def _expire(self) -> None:
        if self._over:
            return
        error = _rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
        self._finish(error, drop_parts=True)
        self._let_go()


OnStream = StreamedCall | StreamedInvoke
"""A call carried on a stream."""
C = TypeVar("C", StreamedCall, StreamedInvoke)


class _Stream:
    """One `InvokeBufferedStream` call with its calls in flight."""

    def __init__(
        self,
        call: Any,
        max_in_flight: int,
        opened_at: float,
        on_end: Callable[[OnStream, grpc.StatusCode | None, bool], None],
    ) -> None:
        self.opened_at = opened_at
        self._call = call
        self._max_in_flight = max_in_flight
        self._on_end = on_end
        self._ids = itertools.count(1)
        self._pending: dict[int, OnStream] = {}
        self._outbox: asyncio.Queue[pb.InvokeBufferedStreamRequest | None] = asyncio.Queue()
        self._retired = False
        self._closing = False  # the end of our side is in the outbox
        # The router said it takes streamed calls (its first message); none is sent before.
        self.takes_streamed = False
        # The id of the last call whose message was handed to gRPC: a call with a higher id was
        # never sent (ids grow, and the outbox is written in order).
        self._last_written = 0
        self.ended = False
        self._writer = asyncio.ensure_future(self._write())
        self._reader = asyncio.ensure_future(self._read())

    def __repr__(self) -> str:
        return f"_Stream(in_flight={len(self._pending)}, ended={self.ended})"

    @property
    def usable(self) -> bool:
        return not self.ended and not self._retired

    def has_place(self) -> bool:
        return len(self._pending) < self._max_in_flight

    def send(self, call: OnStream) -> None:
        """Send `call` (the caller checked `usable` and `has_place`)."""
        ident = next(self._ids)
        self._pending[ident] = call
        self._outbox.put_nowait(call.sent(self, ident))

    def cancel(self, ident: int) -> None:
        if not self.ended and ident in self._pending:
            self._outbox.put_nowait(pb.InvokeBufferedStreamRequest(id=ident, cancel=True))
            if self._retired:
                self._end_if_given_up()

    def credit(self, ident: int, size: int) -> None:
        """The streamed call `ident` passed on `size` more body bytes."""
        if not self.ended and ident in self._pending:
            self._outbox.put_nowait(pb.InvokeBufferedStreamRequest(id=ident, credit=size))

    def retire(self) -> None:
        """Take no new call; close the stream once those in flight are answered (until then
        their cancels still go: a draining router reads them)."""
        self._retired = True
        if not self._pending:
            self._close_our_side()
        else:
            self._end_if_given_up()

    def _end_if_given_up(self) -> None:
        """A retired stream whose calls in flight were all given up on waits for nobody: it is
        ended (the router stops those calls too) rather than kept for answers that a router
        which stopped answering would never send (it would hold their requests for good)."""
        if all(waiting.done() for waiting in self._pending.values()):
            self._call.cancel()

    def _to_write(
        self, message: pb.InvokeBufferedStreamRequest, now: float
    ) -> pb.InvokeBufferedStreamRequest | None:
        """`message` as it goes now, or None if it need not go: a call given up on (cancelled,
        or its deadline passed) while it waited in the outbox is never written (it would reach
        the upstream, which may cost money, for nobody), and its place is free at once; so is
        the cancel of a call that is not in flight."""
        waiting = self._pending.get(message.id)
        if message.WhichOneof("kind") not in ("call", "stream"):
            return message if waiting is not None else None
        if waiting is None or waiting.done():
            if self._pending.pop(message.id, None) is not None and self._retired:
                self.retire()  # it may have been the last one in flight
            return None
        remaining = waiting.deadline - now
        message.timeout_ms = max(1, min(int(remaining * 1000), 0xFFFFFFFF))
        self._last_written = message.id
        return message

    def _close_our_side(self) -> None:
        """Take no new call and close our side once the outbox is written (answers still
        come)."""
        self._retired = True
        if not self._closing:
            self._closing = True
            self._outbox.put_nowait(OUTBOX_END)

    async def _write(self) -> None:
        loop = asyncio.get_running_loop()
        await write_outbox(self._call, self._outbox, lambda m: self._to_write(m, loop.time()))

    async def _read(self) -> None:
        code: grpc.StatusCode | None = None
        try:
            async for answer in self._call:
                if answer.draining:
                    # The router is stopping: no new call here, and our side closes once the
                    # calls in flight are answered (their cancels must still reach it).
                    self.retire()
                    continue
                if answer.takes_streamed:
                    self.takes_streamed = True
                    continue
                self._take(answer)
                for more in answer.more:  # answers sent together: each as if it came alone
                    self._take(more)
            code = await self._call.code()
        except grpc.aio.AioRpcError as err:
            code = err.code()
            if code == grpc.StatusCode.INTERNAL and err.details() == _WRITE_FAILED:
                # grpc.aio's status for a stream that ended under one of our writes, whatever
                # its real one: the stream broke, as a unary call's connection breaks.
                code = grpc.StatusCode.UNAVAILABLE
        except asyncio.CancelledError:
            code = None
        finally:
            self._end(code)

    def _take(self, answer: pb.InvokeBufferedStreamResponse) -> None:
        waiting = self._pending.get(answer.id)
        if waiting is None:
            return  # not an id of ours in flight: nothing to answer
        if waiting.take(answer):
            del self._pending[answer.id]
            if self._retired and not self._pending:
                self._close_our_side()

    def _end(self, code: grpc.StatusCode | None) -> None:
        self.ended = True
        self._writer.cancel()
        pending, self._pending = self._pending, {}
        for ident, call in pending.items():
            self._on_end(call, code, ident > self._last_written)

    async def aclose(self) -> None:
        self._call.cancel()
        await asyncio.gather(self._reader, self._writer, return_exceptions=True)


class RouterStreams:
    """A few `InvokeBufferedStream`s over one router channel, used in turn (see the module)."""

    def __init__(
        self,
        stub: Any,
        unary: Unary,
        unary_stream: UnaryStream,
        *,
        streams: int = STREAMS,
        max_in_flight: int = MAX_IN_FLIGHT,
        max_age: float = MAX_AGE_S,
    ) -> None:
        """`stub`: a `RouterServiceStub` on an authenticated channel (`open_channel`); `unary`
        and `unary_stream`: the unary `InvokeBuffered` and `Invoke`, for the calls no stream
        takes."""
        if streams < 1 or max_in_flight < 1:
            raise ValueError("streams and max_in_flight must be at least 1")
        self._stub = stub
        self._unary = unary
        self._unary_stream = unary_stream
        self._streams: list[_Stream | None] = [None] * streams
        # Streams replaced while calls were still in flight on them: they end once those are
        # answered, and `aclose` ends them too.
        self._retiring: set[_Stream] = set()
        self._turn = 0
        self._max_in_flight = max_in_flight
        self._max_age = max_age
        self._unsupported_until = 0.0
        self._closed = False

    def __repr__(self) -> str:
        return f"RouterStreams(streams={len(self._streams)})"

    def start(self, request: pb.InvokeBufferedRequest, timeout: float) -> StreamedCall | None:
        """Send `request` on a stream, to be answered within `timeout` seconds; None when no
        stream can take it now (the caller sends it as a unary call)."""
        return self._send(StreamedCall, request, timeout)

    def start_stream(self, request: pb.InvokeRequest, timeout: float) -> StreamedInvoke | None:
        """Send the streamed call `request` on a stream, to end within `timeout` seconds; None
        when no stream can take it now (the caller sends it as a unary `Invoke`), also while
        no open stream has said it takes streamed calls."""
        return self._send(StreamedInvoke, request, timeout)

    def _send(self, kind: type[C], request: Any, timeout: float) -> C | None:
        now = asyncio.get_running_loop().time()
        if self._closed or now < self._unsupported_until:
            return None
        stream = self._stream_with_place(now, streamed=kind is StreamedInvoke)
        if stream is None:
            return None
        call = kind(request, current_request_id() or new_request_id(), now + timeout)
        stream.send(call)
        return call

    def _stream_with_place(self, now: float, streamed: bool) -> _Stream | None:
        """The next stream in turn that can take a call (opened if needed; a streamed call
        only on one that said it takes them), or None."""
        for _ in range(len(self._streams)):
            turn = self._turn
            self._turn = (turn + 1) % len(self._streams)
            stream = self._streams[turn]
            if stream is not None and stream.usable and now - stream.opened_at < self._max_age:
                if stream.has_place() and (stream.takes_streamed or not streamed):
                    return stream
                continue
            if stream is not None:
                self._retire(stream)
            # Its own request id: the stream outlives the call that happened to open it.
            rpc = self._stub.InvokeBufferedStream(
                None, metadata=((REQUEST_ID_KEY, new_request_id()), (ANSWERS_TOGETHER_KEY, "1"))
            )
            stream = _Stream(rpc, self._max_in_flight, now, self._stream_ended)
            self._streams[turn] = stream
            if not streamed:
                return stream
        return None

    def _retire(self, stream: _Stream) -> None:
        stream.retire()
        self._retiring = {s for s in self._retiring if not s.ended}
        if not stream.ended:
            self._retiring.add(stream)

    def _stream_ended(self, call: OnStream, code: grpc.StatusCode | None, never_sent: bool) -> None:
        """`call`'s stream ended before its (last) answer: send it again if it was never read,
        else fail it with the stream's status."""
        if call.done():
            return
        if isinstance(call, StreamedInvoke) and call.answered_in_part:
            # Not a router's way (it ends a stream OK only with every call answered), but a
            # call whose answer was partly relayed must not be sent again: it fails.
            call.fail(_rpc_error(grpc.StatusCode.UNAVAILABLE, "the router stream ended early"))
            return
        if code == grpc.StatusCode.UNIMPLEMENTED:
            loop = asyncio.get_running_loop()
            self._unsupported_until = loop.time() + UNSUPPORTED_RETRY_S
            self._go_unary(call)
            return
        if never_sent and not self._closed:
            self._go_unary(call)
            return
        if code == grpc.StatusCode.OK and not self._closed:
            self._go_unary(call)  # never read: the router was stopping
            return
        status = code or grpc.StatusCode.UNAVAILABLE
        call.fail(_rpc_error(status, "the router stream ended before the answer"))

    def _go_unary(self, call: OnStream) -> None:
        if isinstance(call, StreamedInvoke):
            call.go_unary(self._unary_stream)
        else:
            call.go_unary(self._unary)

    async def aclose(self) -> None:
        """End every stream, retired ones still waiting for answers too (their calls in flight
        fail with CANCELLED, or UNAVAILABLE)."""
        self._closed = True
        streams = [s for s in self._streams if s is not None] + list(self._retiring)
        self._streams = [None] * len(self._streams)
        self._retiring = set()
        await asyncio.gather(*(s.aclose() for s in streams))
