"""The router's long-lived streams to the vault's `CredentialService.ResolveStream`.

One `Resolve` per model call costs a gRPC call on each side: a call object, its metadata, the
vault's per-RPC checks and log line. On a stream a lookup is one message each way, which
measured about a third less CPU per lookup, both sides together (the lead's report of this
change has the figures). The vault still answers every lookup itself and audits it first; the
router keeps nothing between lookups.

`ResolveStreams` keeps a few streams per vault channel and sends each lookup on the next one in
turn: each stream is opened through the channel's round robin, so the streams land on the vault
replicas in turn. A stream is replaced after `max_age` seconds (it finishes the lookups it
carries first), so that replicas added since are reached and the vault's connection age limit
is honoured. Each lookup:

- carries an id unique on its stream; its answer is matched by that id;
- waits for one of `max_in_flight` places on its stream, and for its answer, within its own
  deadline (`TimeoutError` when it is over; a late answer is dropped). A place is freed only by
  the answer (or the stream's end), so the vault never has more than `max_in_flight` of a
  stream's lookups to work on;
- fails with `StreamEnded` (and the stream's status code) when its stream ends before it is
  answered; `ResolveStreams.ask` then asks again on another stream, at most `ATTEMPTS` times in
  all, as the channel's retry policy does for the unary `Resolve`. A vault that does not know
  `ResolveStream` (UNIMPLEMENTED: an older vault) makes `ask` raise `StreamsUnsupported`, and
  `available()` false for `UNSUPPORTED_RETRY_S`: the caller uses the unary `Resolve` meanwhile.

A stream's first lookup waits for the vault to accept the stream (initial metadata, sent by
`services.common.grpc_handlers` once its checks pass): one in flight when the vault refuses it
makes grpc.aio report INTERNAL instead of the refusal (PERMISSION_DENIED), which is then retried
and reported as the vault's error. So vaults are upgraded before their routers.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import grpc
import grpc.aio
from aicreds.vault.v1 import credentials_pb2 as pb

from services.common.request_context import REQUEST_ID_KEY, new_request_id
from services.common.stream_outbox import OUTBOX_END, write_outbox

STREAMS = 4
"""Streams per vault channel: enough to reach a few vault replicas in turn."""
MAX_IN_FLIGHT = 100
"""Lookups in flight per stream (the vault works on at most as many per stream)."""
MAX_AGE_S = 60.0
"""A stream takes no new lookups after this long; the next one goes on a new stream."""
ATTEMPTS = 3
"""Streams a lookup is sent on, at most, when the ones before ended without answering it."""
UNSUPPORTED_RETRY_S = 60.0
"""After a vault answered UNIMPLEMENTED, how long the unary `Resolve` is used before asking for
a stream again (a vault upgraded meanwhile gets streams)."""


class StreamEnded(Exception):
    """The stream ended before the lookup was answered; `code` is its status (None: it ended
    without one, e.g. the router closed it)."""

    def __init__(self, code: grpc.StatusCode | None) -> None:
        super().__init__(f"the resolve stream ended ({code.name if code else 'no status'})")
        self.code = code


class StreamsUnsupported(Exception):
    """The vault does not serve `ResolveStream`: use the unary `Resolve`."""


class _Stream:
    """One `ResolveStream` call with its lookups in flight."""

    def __init__(self, call: Any, max_in_flight: int, opened_at: float) -> None:
        self.opened_at = opened_at
        self._call = call
        self._slots = asyncio.Semaphore(max_in_flight)
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[pb.ResolveStreamResponse]] = {}
        self._outbox: asyncio.Queue[pb.ResolveStreamRequest | None] = asyncio.Queue()
        self._retired = False
        self.ended: StreamEnded | None = None
        self._writer = asyncio.ensure_future(self._write())
        self._reader = asyncio.ensure_future(self._read())

    def __repr__(self) -> str:
        return f"_Stream(in_flight={len(self._pending)}, ended={self.ended is not None})"

    @property
    def usable(self) -> bool:
        return self.ended is None and not self._retired

    async def ask(self, message: pb.ResolveStreamRequest) -> pb.ResolveStreamResponse:
        """Send `message` (its `id` is set here) and wait for its answer; the caller bounds
        the wait (a timeout cancels it; the place stays taken until the answer comes)."""
        await self._slots.acquire()
        if self.ended is not None:
            self._slots.release()
            raise self.ended
        ident = next(self._ids)
        message.id = ident
        answer: asyncio.Future[pb.ResolveStreamResponse] = (
            asyncio.get_running_loop().create_future()
        )
        self._pending[ident] = answer
        self._outbox.put_nowait(message)
        return await answer

    def retire(self) -> None:
        """Take no new lookups; close the stream once those in flight are answered."""
        self._retired = True
        if not self._pending:
            self._outbox.put_nowait(OUTBOX_END)

    async def _write(self) -> None:
        await write_outbox(self._call, self._outbox)

    async def _read(self) -> None:
        code: grpc.StatusCode | None = None
        try:
            async for answer in self._call:
                waiting = self._pending.pop(answer.id, None)
                if waiting is None:
                    continue  # not an id of ours in flight: nothing to answer
                self._slots.release()
                if not waiting.done():  # else its caller gave up (its deadline)
                    waiting.set_result(answer)
                if self._retired and not self._pending:
                    self._outbox.put_nowait(OUTBOX_END)
            code = await self._call.code()
        except grpc.aio.AioRpcError as err:
            code = err.code()
        except asyncio.CancelledError:
            code = None
        finally:
            self._end(StreamEnded(code))

    def _end(self, ended: StreamEnded) -> None:
        self.ended = ended
        self._writer.cancel()
        pending, self._pending = self._pending, {}
        for waiting in pending.values():
            # Whoever waits for this place wakes, finds the stream ended and passes it on.
            self._slots.release()
            if not waiting.done():
                waiting.set_exception(ended)

    async def aclose(self) -> None:
        self._call.cancel()
        await asyncio.gather(self._reader, self._writer, return_exceptions=True)


class ResolveStreams:
    """A few `ResolveStream`s over one vault channel, used in turn (see the module)."""

    def __init__(
        self,
        stub: Any,
        *,
        streams: int = STREAMS,
        max_in_flight: int = MAX_IN_FLIGHT,
        max_age: float = MAX_AGE_S,
    ) -> None:
        """`stub`: a `CredentialServiceStub` on an authenticated channel (`open_vault_channel`)."""
        if streams < 1 or max_in_flight < 1:
            raise ValueError("streams and max_in_flight must be at least 1")
        self._stub = stub
        self._streams: list[_Stream | None] = [None] * streams
        self._turn = 0
        self._max_in_flight = max_in_flight
        self._max_age = max_age
        self._unsupported_until = 0.0

    def __repr__(self) -> str:
        return f"ResolveStreams(streams={len(self._streams)})"

    def available(self) -> bool:
        """False for a while after the vault answered that it has no `ResolveStream`."""
        return asyncio.get_running_loop().time() >= self._unsupported_until

    async def ask(
        self, message: pb.ResolveStreamRequest, timeout: float
    ) -> pb.ResolveStreamResponse:
        """The vault's answer to one lookup, within `timeout` seconds (`TimeoutError` after).

        Raises:
            StreamsUnsupported: the vault has no `ResolveStream`; nothing was resolved.
            StreamEnded: the last stream tried ended before answering (its status code).
            TimeoutError: no answer within `timeout`.
        """
        async with asyncio.timeout(timeout):
            for attempt in range(ATTEMPTS):
                try:
                    return await self._next_stream().ask(message)
                except StreamEnded as ended:
                    if ended.code == grpc.StatusCode.UNIMPLEMENTED:
                        loop = asyncio.get_running_loop()
                        self._unsupported_until = loop.time() + UNSUPPORTED_RETRY_S
                        raise StreamsUnsupported() from None
                    if attempt + 1 == ATTEMPTS or ended.code in _NOT_RETRIED:
                        raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _next_stream(self) -> _Stream:
        turn = self._turn
        self._turn = (turn + 1) % len(self._streams)
        stream = self._streams[turn]
        now = asyncio.get_running_loop().time()
        if stream is not None and stream.usable and now - stream.opened_at < self._max_age:
            return stream
        if stream is not None:
            stream.retire()
        # Its own request id: the stream outlives the call that happened to open it.
        call = self._stub.ResolveStream(None, metadata=((REQUEST_ID_KEY, new_request_id()),))
        stream = _Stream(call, self._max_in_flight, now)
        self._streams[turn] = stream
        return stream

    async def aclose(self) -> None:
        """End every stream (their lookups in flight fail with `StreamEnded`)."""
        streams = [s for s in self._streams if s is not None]
        self._streams = [None] * len(self._streams)
        await asyncio.gather(*(s.aclose() for s in streams))


# The caller itself is refused: another stream would be refused the same way.
_NOT_RETRIED = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
