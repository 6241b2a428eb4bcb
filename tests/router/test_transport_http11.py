"""The router's HTTP/1.1 connection (`transport/http11.py`) on httptools' parser: framing edge
cases over a scripted stream (each item one socket read), then through a real loopback server
that writes raw bytes (what arrives together leaves together, what arrives apart leaves apart).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpcore
import pytest

from services.router.egress import EgressPolicy
from services.router.errors import UpstreamUnavailable
from services.router.transport import UpstreamClient, UpstreamRequest
from services.router.transport.http11 import MAX_HEAD, HTTP11Connection, HTTP11Response

KEY = (b"http", b"upstream.test", 80)
SECRET = "sk-live-HTTP11-0123456789"


class ScriptedStream(httpcore.AsyncNetworkStream):
    """Answers each read with the next scripted piece (b"" once they run out: EOF)."""

    def __init__(self, *reads: bytes) -> None:
        self.reads = list(reads)
        self.written = b""
        self.closed = False

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self.reads.pop(0) if self.reads else b""

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.written += buffer

    async def aclose(self) -> None:
        self.closed = True

    def get_extra_info(self, info: str) -> Any:
        return bool(self.reads) if info == "is_readable" else None


async def _exchange(
    *reads: bytes, method: bytes = b"GET", headers: list[tuple[bytes, bytes]] | None = None
) -> tuple[HTTP11Connection, HTTP11Response, list[bytes]]:
    """One request over a scripted stream: the connection, the response, its body pieces."""
    connection = HTTP11Connection(KEY, ScriptedStream(*reads), keepalive_expiry=60)
    response = await connection.request(
        method,
        b"/v1/x",
        headers or [(b"Host", b"upstream.test")],
        b"",
        first_byte_timeout=5,
        idle_timeout=5,
    )
    pieces = [piece async for piece in response.pieces()]
    await response.aclose()
    return connection, response, pieces


CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


async def test_a_chunk_split_across_reads_leaves_as_it_arrives() -> None:
    connection, response, pieces = await _exchange(CHUNKED_HEAD + b"5\r\nhel", b"lo\r\n0\r\n\r\n")
    assert pieces == [b"hel", b"lo"]
    assert connection.is_idle()  # whole, kept alive: reusable


async def test_several_chunks_in_one_read_leave_as_one_piece() -> None:
    events = b"".join(b"%x\r\ndata: %d\n\n\r\n" % (len(b"data: %d\n\n" % n), n) for n in range(5))
    _, _, pieces = await _exchange(CHUNKED_HEAD, events, b"0\r\n\r\n")
    assert pieces == [b"".join(b"data: %d\n\n" % n for n in range(5))]


async def test_the_head_and_body_in_one_read() -> None:
    connection, response, pieces = await _exchange(
        b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nX-Edge:  v \r\n\r\nok"
    )
    assert response.status == 201
    assert response.headers == [(b"content-length", b"2"), (b"x-edge", b"v")]
    assert pieces == [b"ok"]
    assert connection.is_idle()


async def test_a_head_split_across_reads() -> None:
    _, response, pieces = await _exchange(
        b"HTTP/1.1 200 OK\r\nContent-Le", b"ngth: 3\r\n", b"\r\nab", b"c"
    )
    assert response.status == 200
    assert pieces == [b"ab", b"c"]


async def test_garbage_after_a_response_keeps_the_response_but_not_the_connection() -> None:
    connection, _, pieces = await _exchange(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokJUNK")
    assert pieces == [b"ok"]
    assert connection.is_closed()


async def test_a_pipelined_second_response_is_not_taken_for_the_next_call() -> None:
    second = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale"
    connection, _, pieces = await _exchange(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + second
    )
    assert pieces == [b"ok"]
    assert connection.is_closed()


async def test_a_bad_chunk_size_is_a_protocol_error() -> None:
    with pytest.raises(httpcore.RemoteProtocolError):
        await _exchange(CHUNKED_HEAD + b"3\r\nabc\r\nzz\r\n")


async def test_premature_eof_mid_body_is_an_error_with_a_length() -> None:
    with pytest.raises(httpcore.RemoteProtocolError):
        await _exchange(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort")


async def test_premature_eof_mid_chunked_body_is_an_error() -> None:
    with pytest.raises(httpcore.RemoteProtocolError):
        await _exchange(CHUNKED_HEAD + b"5\r\nhel")


async def test_eof_before_a_head_is_an_error() -> None:
    with pytest.raises(httpcore.RemoteProtocolError):
        await _exchange(b"HTTP/1.1 200 OK\r\nContent-")


async def test_a_body_without_length_is_read_to_eof_and_the_connection_closed() -> None:
    connection, _, pieces = await _exchange(b"HTTP/1.1 200 OK\r\n\r\nabc", b"def")
    assert pieces == [b"abc", b"def"]
    assert connection.is_closed()


@pytest.mark.parametrize("status", [204, 304])
async def test_no_body_statuses_have_no_body(status: int) -> None:
    connection, response, pieces = await _exchange(
        b"HTTP/1.1 %d X\r\nContent-Length: 5\r\n\r\n" % status
    )
    assert response.status == status
    assert pieces == []
    assert connection.is_idle()


async def test_an_answer_to_head_has_no_body() -> None:
    connection, response, pieces = await _exchange(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", method=b"HEAD"
    )
    assert response.status == 200
    assert pieces == []
    assert connection.is_closed()  # not read past its head: not reused


async def test_interim_answers_are_skipped() -> None:
    _, response, pieces = await _exchange(
        b"HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
    )
    assert response.status == 200
    assert response.headers == [(b"content-length", b"1")]
    assert pieces == [b"x"]


async def test_an_unasked_protocol_switch_is_an_error() -> None:
    with pytest.raises(httpcore.RemoteProtocolError):
        await _exchange(b"HTTP/1.1 101 Switching\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n")


async def test_trailers_are_dropped() -> None:
    _, response, pieces = await _exchange(CHUNKED_HEAD + b"2\r\nok\r\n0\r\nX-Trailer: t\r\n\r\n")
    assert response.headers == [(b"transfer-encoding", b"chunked")]
    assert pieces == [b"ok"]


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx",
        b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx",
    ],
)
async def test_a_response_that_ends_the_connection_is_not_reused(head: bytes) -> None:
    connection, _, pieces = await _exchange(head)
    assert pieces == [b"x"]
    assert connection.is_closed()


async def test_a_request_that_asks_to_close_does_not_reuse_the_connection() -> None:
    connection, _, _ = await _exchange(
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
        headers=[(b"Host", b"upstream.test"), (b"Connection", b"close")],
    )
    assert connection.is_closed()


async def test_a_response_read_only_partly_closes_the_connection() -> None:
    connection = HTTP11Connection(
        KEY, ScriptedStream(CHUNKED_HEAD + b"2\r\nok\r\n", b"0\r\n\r\n"), keepalive_expiry=60
    )
    response = await connection.request(b"GET", b"/", [], b"", first_byte_timeout=5, idle_timeout=5)
    await response.aclose()
    assert connection.is_closed()


async def test_a_head_too_large_is_refused() -> None:
    with pytest.raises(httpcore.RemoteProtocolError, match="too large"):
        await _exchange(b"HTTP/1.1 200 OK\r\n", b"X-Big: " + b"a" * MAX_HEAD + b"\r\n")


async def test_a_head_too_large_is_refused_when_it_arrives_in_one_read() -> None:
    lines = b"".join(b"X-%d: %s\r\n" % (i, b"a" * 1000) for i in range(MAX_HEAD // 1000 + 1))
    with pytest.raises(httpcore.RemoteProtocolError, match="too large"):
        await _exchange(b"HTTP/1.1 200 OK\r\n" + lines + b"Content-Length: 0\r\n\r\n")


async def test_a_malformed_answer_is_a_protocol_error_that_quotes_nothing() -> None:
    with pytest.raises(httpcore.RemoteProtocolError) as caught:
        await _exchange(f"HTTP/1.1 200 OK\r\nX-Key: {SECRET}\x00\r\n\r\n".encode())
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    "line",
    [
        (b"X-Injected", SECRET.encode() + b"\r\nX-Other: b"),
        (b"X-Injected", SECRET.encode() + b"\nb"),
        (b"X-Injected", SECRET.encode() + b"\rb"),
        (b"X-Injected", SECRET.encode() + b"\x00b"),
        (b"X-A\r\nX-B", SECRET.encode()),
    ],
)
async def test_a_header_that_would_break_the_framing_is_never_sent(
    line: tuple[bytes, bytes],
) -> None:
    stream = ScriptedStream(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    connection = HTTP11Connection(KEY, stream, keepalive_expiry=60)
    with pytest.raises(httpcore.LocalProtocolError) as caught:
        await connection.request(b"GET", b"/", [line], b"", first_byte_timeout=5, idle_timeout=5)
    assert stream.written == b""
    assert SECRET not in str(caught.value)
    assert connection.is_closed()


async def test_the_request_is_written_as_given() -> None:
    stream = ScriptedStream(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    connection = HTTP11Connection(KEY, stream, keepalive_expiry=60)
    response = await connection.request(
        b"POST",
        b"/v1/x?a=1",
        [(b"Host", b"upstream.test"), (b"Content-Length", b"2")],
        b"{}",
        first_byte_timeout=5,
        idle_timeout=5,
    )
    await response.aclose()
    assert stream.written == (
        b"POST /v1/x?a=1 HTTP/1.1\r\nHost: upstream.test\r\nContent-Length: 2\r\n\r\n{}"
    )
    assert connection.is_available()


# Through a real loopback server that writes raw bytes.

RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> None:
    await reader.readuntil(b"\r\n\r\n")  # the tests send GET without a body


@pytest.fixture
async def raw_upstream() -> AsyncIterator[Callable[[RawHandler], Awaitable[str]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: RawHandler) -> str:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await handler(reader, writer)
            finally:
                writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def client() -> AsyncIterator[UpstreamClient]:
    client = UpstreamClient(EgressPolicy.from_setting("127.0.0.1"), connect_timeout=2)
    yield client
    await client.aclose()


def _deadline(seconds: float = 10) -> float:
    return asyncio.get_running_loop().time() + seconds


async def test_chunks_waiting_together_leave_as_one_piece_and_apart_leave_apart(
    raw_upstream: Callable[[RawHandler], Awaitable[str]], client: UpstreamClient
) -> None:
    got_first = asyncio.Event()
    sent_burst = asyncio.Event()
    got_burst = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(CHUNKED_HEAD + b"6\r\nfirst\n\r\n")
        await writer.drain()
        await got_first.wait()
        writer.write(b"2\r\na\n\r\n2\r\nb\n\r\n2\r\nc\n\r\n")  # three chunks in one write
        await writer.drain()
        sent_burst.set()
        await got_burst.wait()
        writer.write(b"5\r\nlast\n\r\n0\r\n\r\n")
        await writer.drain()
        await reader.read()

    url = await raw_upstream(handler)
    async with client.stream(UpstreamRequest("GET", url + "/", []), deadline=_deadline()) as r:
        pieces = r.chunks()
        assert await anext(pieces) == b"first\n"
        got_first.set()
        await sent_burst.wait()
        assert await anext(pieces) == b"a\nb\nc\n"
        got_burst.set()
        assert [p async for p in pieces] == [b"last\n"]
    assert r.chunks_received == 3
    assert r.bytes_received == len(b"first\na\nb\nc\nlast\n")


async def test_a_connection_dropped_mid_body_is_unavailable(
    raw_upstream: Callable[[RawHandler], Awaitable[str]], client: UpstreamClient
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        await writer.drain()
        writer.close()

    url = await raw_upstream(handler)
    received: list[bytes] = []
    with pytest.raises(UpstreamUnavailable, match="lost mid-response"):
        async with client.stream(UpstreamRequest("GET", url + "/", []), deadline=_deadline()) as r:
            async for piece in r.chunks():
                received.append(piece)
    assert received == [b"partial"]


async def test_a_malformed_head_is_unavailable(
    raw_upstream: Callable[[RawHandler], Awaitable[str]], client: UpstreamClient
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()
        await reader.read()

    url = await raw_upstream(handler)
    with pytest.raises(UpstreamUnavailable, match="broke the HTTP protocol"):
        async with client.stream(UpstreamRequest("GET", url + "/", []), deadline=_deadline()):
            pass
    assert client.connections_in_use() == 0
    assert client.connections_idle() == 0
