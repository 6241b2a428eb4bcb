"""HTTP/1.1 client connections on httptools' response parser (llhttp, in C).

`HTTP11Connection` sends one request at a time on one network stream and reads the answer with
`httptools.HttpResponseParser`: the parser calls back per header and per body piece in C, so a
call costs a few Python calls per read instead of h11's pure-Python state machine per event.

**One body piece per read.** Each read takes everything the socket delivered since the last one
(`AsyncioStream.read`), the parser decodes it (chunked framing included), and the response's
`pieces()` yields all the body bytes of that read as one `bytes`. An idle upstream's chunks
still leave one by one, at once; chunks that were already waiting together (a busy router,
a fast upstream) leave together, so the router sends one gRPC message for them, not one each.

What the connection keeps from h11/httpcore, which it replaces:

- **Reuse** only after a complete response that both sides keep alive (not HTTP/1.0 without
  keep-alive, not `Connection: close` from either side, not read to EOF); anything the upstream
  sent after the response (another message, garbage) makes the connection unfit, and so does an
  answer to HEAD (llhttp cannot be told that it carries no body, so it is not read past).
- **Bodies**: `Content-Length`, chunked (trailers dropped), or read to EOF when neither is
  given; none for HEAD, 1xx, 204 and 304. 1xx answers before the real one are skipped; a 101
  the router never asked for is a protocol error.
- **Bounds**: a response head larger than 100 KiB is refused (h11's default, which httpcore
  kept); the body is unbounded here (callers bound what they buffer).
- **Errors** are httpcore's (`errors.py` maps them in one table): `RemoteProtocolError` for a
  malformed answer or one cut short, `LocalProtocolError` for a request line or header that
  would break the framing, the stream's own read, write and timeout errors. Messages are fixed
  and never quote the bytes (a header may hold a credential).
- **Headers**: response names lowercased and values without edge whitespace, as h11 gave them.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from enum import Enum

import httpcore
import httptools

from services.router.transport.target import OriginKey

MAX_HEAD = 100 * 1024
"""The largest response head accepted (h11's `max_incomplete_event_size`, as httpcore set it)."""

_READ_SIZE = 1024 * 1024  # at most this much per read (the stream holds at most ~256 KiB)
_OWS = b" \t"


class _State(Enum):
    NEW = 0
    ACTIVE = 1
    IDLE = 2
    CLOSED = 3


class _After(Exception):
    """Raised from a parser callback to stop it: what follows is not this response's."""


class _ResponseParser:
    """The parser's callbacks: one response's head, its body pieces since the last read, and
    whether it is complete and the connection fit for another request."""

    __slots__ = (
        "body",
        "complete",
        "eof_delimited",
        "head_bytes",
        "head_done",
        "head_only",
        "headers",
        "interim",
        "keep_alive",
        "parser",
        "received",
        "status",
    )

    def __init__(self, head_only: bool) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.head_only = head_only
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.head_done = False
        self.interim = False
        self.complete = False
        self.keep_alive = False
        self.eof_delimited = False
        self.received = 0  # bytes fed while the head was incomplete
        # Header bytes of the heads parsed (a head that arrived whole in one read, with the
        # body after it, is bounded by these: `received` counts that read's body too).
        self.head_bytes = 0

    def feed(self, data: bytes) -> None:
        """Parse `data`; RemoteProtocolError if it is not a valid answer."""
        if not self.head_done:
            self.received += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            raise httpcore.RemoteProtocolError("the upstream switched protocols") from None
        except httptools.HttpParserError:
            if not self.complete:
                raise httpcore.RemoteProtocolError("the upstream sent a malformed answer") from None
            self.keep_alive = False  # the response is whole; what followed it is not ours
        if self.head_bytes > MAX_HEAD or (not self.head_done and self.received > MAX_HEAD):
            raise httpcore.RemoteProtocolError("the upstream's response head is too large")

    def end_of_stream(self) -> None:
        """The upstream closed the connection: the end of a body read to EOF, or an error."""
        if self.complete:
            return
        if not self.head_done:
            raise httpcore.RemoteProtocolError("Server disconnected without sending a response.")
        if not self.eof_delimited:
            raise httpcore.RemoteProtocolError("the upstream closed the connection mid-answer")
        self.complete = True
        self.keep_alive = False

    # httptools' callbacks

    def on_message_begin(self) -> None:
        if self.complete:  # a second message: the connection is not fit for reuse
            raise _After

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.head_done:  # trailers are dropped
            self.head_bytes += len(name) + len(value)
            self.headers.append((name.lower(), value.rstrip(_OWS)))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:
            if status == 101:  # the router never asks to switch protocols
                raise _After
            self.interim = True
            self.headers = []
            return
        self.status = status
        self.head_done = True
        if self.head_only:
            self.complete = True
            raise _After  # llhttp would wait for the body a Content-Length announces
        if status != 204 and status != 304:
            self.eof_delimited = _read_to_eof(self.headers)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()


def _read_to_eof(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether a body is delimited by the connection's end (neither a length nor chunked)."""
    for name, value in headers:
        if name == b"content-length":
            return False
        if name == b"transfer-encoding" and value.lower().endswith(b"chunked"):
            return False
    return True


def _asks_close(headers: Sequence[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if len(name) == 10 and name.lower() == b"connection" and b"close" in value.lower():
            return True
    return False


class HTTP11Response:
    """A response whose head has arrived; `pieces()` reads its body."""

    __slots__ = ("_closed", "_connection", "_idle_timeout", "_parsed", "_reusable")

    def __init__(
        self,
        connection: HTTP11Connection,
        parsed: _ResponseParser,
        idle_timeout: float | None,
        reusable: bool,
    ) -> None:
        self._connection = connection
        self._parsed = parsed
        self._idle_timeout = idle_timeout
        self._reusable = reusable
        self._closed = False

    @property
    def status(self) -> int:
        return self._parsed.status

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """Names lowercased, in the order received."""
        return self._parsed.headers

    async def pieces(self) -> AsyncIterator[bytes]:
        """The body: per read from the socket, every body byte it completed, as one piece.

        Each wait for more is bounded by the idle timeout (httpcore.ReadTimeout).
        """
        parsed = self._parsed
        stream = self._connection.stream
        body = parsed.body
        while True:
            if body:
                piece = body[0] if len(body) == 1 else b"".join(body)
                body.clear()
                yield piece
            if parsed.complete:
                return
            data = await stream.read(_READ_SIZE, self._idle_timeout)
            if self._closed:
                raise httpcore.ReadError("the response was closed")
            if data:
                parsed.feed(data)
            else:
                parsed.end_of_stream()

    async def aclose(self) -> None:
        """Give the connection back for reuse if the response was whole, else close it."""
        if self._closed:
            return
        self._closed = True
        parsed = self._parsed
        await self._connection.response_closed(
            self._reusable and parsed.complete and parsed.keep_alive
        )


class HTTP11Connection:
    """One HTTP/1.1 connection to an origin, carrying one request at a time.

    The pool asks `is_available`/`has_expired` before reusing it and `is_idle` when it comes
    back; `aclose` closes the stream at once.
    """

    __slots__ = ("_expire_at", "_keepalive_expiry", "_state", "key", "stream")

    def __init__(
        self, key: OriginKey, stream: httpcore.AsyncNetworkStream, keepalive_expiry: float | None
    ) -> None:
        self.key = key
        self.stream = stream
        self._keepalive_expiry = keepalive_expiry
        self._expire_at: float | None = None
        self._state = _State.NEW

    async def request(
        self,
        method: bytes,
        target: bytes,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes,
        *,
        first_byte_timeout: float | None,
        idle_timeout: float | None,
    ) -> HTTP11Response:
        """Send a request; return once the final response's head has arrived.

        `first_byte_timeout` bounds each write and each read until then; `idle_timeout` each
        read of the body. On any error the connection is closed.
        """
        if self._state is not _State.NEW and self._state is not _State.IDLE:
            raise httpcore.ConnectionNotAvailable()
        self._state = _State.ACTIVE
        self._expire_at = None
        try:
            head = _request_head(method, target, headers)
            head_only = method == b"HEAD"
            stream = self.stream
            try:
                await stream.write(head, first_byte_timeout)
                if body:
                    await stream.write(body, first_byte_timeout)
            except httpcore.WriteError:
                # The server may have answered early (e.g. 413) and closed its side: read it.
                pass
            parsed = _ResponseParser(head_only)
            while not parsed.head_done:
                data = await stream.read(_READ_SIZE, first_byte_timeout)
                if data:
                    parsed.feed(data)
                else:
                    parsed.end_of_stream()
        except BaseException:
            await self.aclose()
            raise
        reusable = not head_only and not _asks_close(headers)
        return HTTP11Response(self, parsed, idle_timeout, reusable)

    async def response_closed(self, reusable: bool) -> None:
        if reusable and self._state is _State.ACTIVE:
            self._state = _State.IDLE
            if self._keepalive_expiry is not None:
                self._expire_at = time.monotonic() + self._keepalive_expiry
        else:
            await self.aclose()

    def is_available(self) -> bool:
        return self._state is _State.IDLE

    def has_expired(self) -> bool:
        """Past its keep-alive expiry, or idle and readable (the server closed it)."""
        if self._expire_at is not None and time.monotonic() > self._expire_at:
            return True
        return self._state is _State.IDLE and bool(self.stream.get_extra_info("is_readable"))

    def is_idle(self) -> bool:
        return self._state is _State.IDLE

    def is_closed(self) -> bool:
        return self._state is _State.CLOSED

    async def aclose(self) -> None:
        if self._state is not _State.CLOSED:
            self._state = _State.CLOSED
            await self.stream.aclose()


def _request_head(method: bytes, target: bytes, headers: Sequence[tuple[bytes, bytes]]) -> bytes:
    """The request line and headers; LocalProtocolError if one would break the framing.

    The router checks every header before (services/router/headers.py); this is the last
    guard against request smuggling: exactly one CRLF per line, and no NUL.
    """
    lines = [b"%s %s HTTP/1.1\r\n" % (method, target)]
    lines.extend([b"%s: %s\r\n" % line for line in headers])
    lines.append(b"\r\n")
    head = b"".join(lines)
    breaks = len(lines)
    if head.count(b"\n") != breaks or head.count(b"\r") != breaks or b"\0" in head:
        raise httpcore.LocalProtocolError("a request line or header holds a line break")
    return head
