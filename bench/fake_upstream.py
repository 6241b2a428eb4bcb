"""A fast fake OpenAI-compatible upstream: the bottom line every other figure is compared with.

A raw asyncio HTTP/1.1 server (uvloop when present) with keep-alive and pipelining, no
framework, so that it costs a few microseconds per request and is never what limits the stack.
It answers:

- `POST <any>/chat/completions` (and any other POST): a fixed chat completion as JSON, or, when
  the body asks for `"stream": true`, an SSE stream of `chunks` events `interval_ms` apart
  (chunked transfer encoding), ending with `data: [DONE]`;
- `GET <any>/models`: a one-model list; `GET /healthz`: `ok`.

With `expected_auth` set, a request whose `Authorization` header is not exactly that value gets
401: a bench run through the stack then proves the placeholder was substituted on every call,
since wrk counts a 401 as an error.

`serve_forever` runs `workers` processes sharing one port with SO_REUSEPORT. Run it alone with
`python -m bench.fake_upstream --port 8999`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sys
from dataclasses import dataclass
from typing import cast

COMPLETION = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "bench-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello from the bench upstream."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16},
    },
    separators=(",", ":"),
).encode()

MODELS = json.dumps(
    {"object": "list", "data": [{"id": "bench-model", "object": "model", "owned_by": "bench"}]},
    separators=(",", ":"),
).encode()


def sse_event(index: int) -> bytes:
    """One SSE `data:` event holding a chat.completion.chunk with one word."""
    chunk = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "bench-model",
        "choices": [{"index": 0, "delta": {"content": f"w{index} "}, "finish_reason": None}],
    }
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


def _chunk(data: bytes) -> bytes:
    """Frame `data` for Transfer-Encoding: chunked."""
    return b"%x\r\n%s\r\n" % (len(data), data)


@dataclass(frozen=True)
class UpstreamConfig:
    """How the fake upstream answers."""

    chunks: int = 16
    interval_ms: float = 1.0
    expected_auth: bytes | None = None


def _response(status: bytes, content_type: bytes, body: bytes, keep_alive: bool) -> bytes:
    return b"".join(
        (
            b"HTTP/1.1 ",
            status,
            b"\r\nContent-Type: ",
            content_type,
            b"\r\nContent-Length: ",
            str(len(body)).encode(),
            b"\r\n" if keep_alive else b"\r\nConnection: close\r\n",
            b"\r\n",
            body,
        )
    )


_MAX_HEAD = 64 * 1024
_BAD_KEY = (
    b'{"error":{"message":"bad key","type":"invalid_request_error","code":"invalid_api_key"}}'
)


class _Connection(asyncio.Protocol):
    """One client connection: parses requests as bytes arrive and answers each in order."""

    def __init__(self, config: UpstreamConfig) -> None:
        self._config = config
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None
        # While an SSE answer is being written, later pipelined requests wait in the buffer.
        self._streaming = False
        self._closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self._transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True

    def data_received(self, data: bytes) -> None:
        self._buf += data
        self._drain_requests()

    def _drain_requests(self) -> None:
        transport = self._transport
        assert transport is not None
        while not self._streaming and not self._closed:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > _MAX_HEAD:
                    transport.write(_response(b"431 Too Large", b"text/plain", b"", False))
                    transport.close()
                return
            head = bytes(self._buf[:end]).decode("latin-1")
            lines = head.split("\r\n")
            try:
                method, target, version = lines[0].split(" ", 2)
            except ValueError:
                transport.write(_response(b"400 Bad Request", b"text/plain", b"", False))
                transport.close()
                return
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if "chunked" in headers.get("transfer-encoding", "").lower():
                transport.write(_response(b"501 Not Implemented", b"text/plain", b"", False))
                transport.close()
                return
            length = int(headers.get("content-length", "0") or 0)
            if len(self._buf) < end + 4 + length:
                return  # body not complete yet
            body = bytes(self._buf[end + 4 : end + 4 + length])
            del self._buf[: end + 4 + length]
            connection = headers.get("connection", "").lower()
            keep_alive = connection != "close" and (
                version == "HTTP/1.1" or connection == "keep-alive"
            )
            self._answer(method, target, headers, body, keep_alive)
            if not keep_alive:
                transport.close()
                return

    def _answer(
        self, method: str, target: str, headers: dict[str, str], body: bytes, keep_alive: bool
    ) -> None:
        transport = self._transport
        assert transport is not None
        path = target.split("?", 1)[0]
        expected = self._config.expected_auth
        if path == "/healthz":
            transport.write(_response(b"200 OK", b"text/plain", b"ok", keep_alive))
            return
        if expected is not None and headers.get("authorization", "").encode() != expected:
            transport.write(
                _response(b"401 Unauthorized", b"application/json", _BAD_KEY, keep_alive)
            )
            return
        if method == "GET" and path.endswith("/models"):
            transport.write(_response(b"200 OK", b"application/json", MODELS, keep_alive))
            return
        if method != "POST":
            transport.write(_response(b"404 Not Found", b"application/json", b"{}", keep_alive))
            return
        if b'"stream":true' in body.replace(b" ", b""):
            self._streaming = True
            asyncio.get_running_loop().create_task(self._stream(keep_alive))
            return
        transport.write(_response(b"200 OK", b"application/json", COMPLETION, keep_alive))

    async def _stream(self, keep_alive: bool) -> None:
        transport = self._transport
        assert transport is not None
        config = self._config
        head = (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\n"
        )
        head += b"\r\n" if keep_alive else b"Connection: close\r\n\r\n"
        transport.write(head + _chunk(sse_event(0)))
        for i in range(1, config.chunks):
            if config.interval_ms > 0:
                await asyncio.sleep(config.interval_ms / 1000)
            if self._closed:
                return
            transport.write(_chunk(sse_event(i)))
        if self._closed:
            return
        transport.write(_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        self._streaming = False
        if not keep_alive:
            transport.close()
            return
        self._drain_requests()


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket with SO_REUSEPORT, so several worker processes can share the port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


def _install_fast_loop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def _serve(sock: socket.socket, config: UpstreamConfig) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await loop.create_server(lambda: _Connection(config), sock=sock)
    async with server:
        await stop.wait()


def run_worker(host: str, port: int, config: UpstreamConfig) -> None:
    """Serve on host:port in this process until SIGTERM."""
    _install_fast_loop()
    asyncio.run(_serve(bind_socket(host, port), config))


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def worker_command(host: str, port: int, config: UpstreamConfig) -> list[str]:
    """The command line of one worker process (used by bench.stack to start them)."""
    cmd = [
        sys.executable,
        "-m",
        "bench.fake_upstream",
        "--host",
        host,
        "--port",
        str(port),
        "--chunks",
        str(config.chunks),
        "--interval-ms",
        str(config.interval_ms),
    ]
    # `expected_auth` goes through the environment (EXPECTED_AUTH_ENV), not argv: argv is
    # readable by every user in /proc.
    return cmd


EXPECTED_AUTH_ENV = "BENCH_UPSTREAM_EXPECTED_AUTH"


def main(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8999)
    parser.add_argument("--chunks", type=int, default=16)
    parser.add_argument("--interval-ms", type=float, default=1.0)
    args = parser.parse_args(argv)
    env = os.environ if environ is None else environ
    expected = env.get(EXPECTED_AUTH_ENV)
    config = UpstreamConfig(
        chunks=max(1, args.chunks),
        interval_ms=args.interval_ms,
        expected_auth=expected.encode() if expected else None,
    )
    run_worker(args.host, args.port, config)


if __name__ == "__main__":
    main()
