"""A real HTTP/1.1 upstream on 127.0.0.1 that records exactly what it received.

Built on asyncio streams and h11 so that the test controls every byte and every pause: a handler
gets the recorded request and a `Reply` to send the head and body chunks whenever it likes
(waiting on events the test sets), and the server notices when the client goes away in the
middle of a response (`UpstreamServer.disconnected`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import h11


@dataclass
class RecordedRequest:
    """One request as it arrived: method, target, header lines in order, body; over TLS, the
    ALPN protocol agreed."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    alpn: str | None = None

    def header_values(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]

    def header(self, name: str) -> str | None:
        values = self.header_values(name)
        return values[0] if values else None


class Reply:
    """What a handler uses to answer: the head once, then chunks, each flushed at once."""

    def __init__(self, conn: h11.Connection, writer: asyncio.StreamWriter) -> None:
        self._conn = conn
        self._writer = writer
        self.head_sent = False

    async def head(self, status: int = 200, headers: list[tuple[str, str]] | None = None) -> None:
        lines = list(headers or [])
        self._writer.write(self._conn.send(h11.Response(status_code=status, headers=lines)))
        await self._writer.drain()
        self.head_sent = True

    async def chunk(self, data: bytes) -> None:
        self._writer.write(self._conn.send(h11.Data(data=data)))
        await self._writer.drain()

    async def end(self) -> None:
        self._writer.write(self._conn.send(h11.EndOfMessage()))
        await self._writer.drain()

    def close(self) -> None:
        """Close the connection after a complete answer, as a keep-alive timeout does."""
        self._writer.close()


Handler = Callable[[RecordedRequest, Reply], Awaitable[None]]


async def echo_handler(request: RecordedRequest, reply: Reply) -> None:
    """Answers 200 with a JSON description of the request."""
    body = json.dumps(
        {"method": request.method, "target": request.target, "body": request.body.decode()}
    ).encode()
    await reply.head(
        200, [("content-type", "application/json"), ("content-length", str(len(body)))]
    )
    await reply.chunk(body)
    await reply.end()


@dataclass
class UpstreamServer:
    """The server; `handler` may be swapped by a test at any time."""

    handler: Handler = echo_handler
    requests: list[RecordedRequest] = field(default_factory=list)
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0
    tls: ssl.SSLContext | None = None
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def base_url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request = await self._read_request(conn, reader)
                if request is None:
                    return
                tls = writer.get_extra_info("ssl_object")
                if tls is not None:
                    request.alpn = tls.selected_alpn_protocol()
                self.requests.append(request)
                await self._respond(conn, reader, writer, request)
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (ConnectionError, h11.ProtocolError, asyncio.IncompleteReadError):
            return
        except asyncio.CancelledError:
            return  # stopped by `stop()`; this task is the connection's outermost frame
        finally:
            self._tasks.discard(task)  # type: ignore[arg-type]
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _read_request(
        self, conn: h11.Connection, reader: asyncio.StreamReader
    ) -> RecordedRequest | None:
        head: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(65536)
                conn.receive_data(data)
                continue
            if isinstance(event, h11.ConnectionClosed):
                return None
            if isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                return RecordedRequest(
                    method=head.method.decode(),
                    target=head.target.decode(),
                    headers=[(n.decode(), v.decode()) for n, v in head.headers.raw_items()],
                    body=bytes(body),
                )

    async def _respond(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        request: RecordedRequest,
    ) -> None:
        """Run the handler while watching the connection: EOF mid-response is a disconnect."""
        handling = asyncio.ensure_future(self.handler(request, Reply(conn, writer)))
        watching = asyncio.ensure_future(reader.read(1))
        try:
            await asyncio.wait({handling, watching}, return_when=asyncio.FIRST_COMPLETED)
            if watching.done() and not handling.done():
                self.disconnected.set()
                handling.cancel()
                with contextlib.suppress(BaseException):
                    await handling
                return
            await handling
        except (ConnectionError, OSError):
            self.disconnected.set()
            raise
        finally:
            watching.cancel()
            with contextlib.suppress(BaseException):
                await watching


@contextlib.asynccontextmanager
async def running_upstream(
    handler: Handler = echo_handler, tls: ssl.SSLContext | None = None
) -> AsyncIterator[UpstreamServer]:
    """A started upstream (HTTPS with `tls`); stopped on exit."""
    server = UpstreamServer(handler=handler, tls=tls)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def sse_event(n: int) -> bytes:
    """One server-sent event, as LLM APIs stream them."""
    return f'data: {{"n": {n}}}\n\n'.encode()
