"""The one fake upstream of the tests: a real HTTP/1.1 server on 127.0.0.1:0 that records exactly
what it received and answers as its handler says.

Built on asyncio streams and h11, so a test controls every byte and every pause. A `Handler` gets
the `RecordedRequest` and a `Reply` to send the head and body chunks whenever it likes (waiting on
events the test sets); the server notices when the client goes away in the middle of a response
(`FakeUpstream.disconnected`, and the handler is cancelled).

Two ways to run it:

    async with running_upstream(handler, tls=context) as upstream:   # in the test's event loop
    with FakeUpstream(VendorApi()) as upstream:                       # on a loop in its own thread

The thread is for synchronous clients (the official SDKs block their thread): the gateway's event
loop, the SDK and this server never wait on each other. Handlers:

- `echo_handler` (default of `running_upstream`): 200 with a JSON description of the request.
- `VendorApi` (default of `FakeUpstream`): enough OpenAI and Anthropic for the official SDKs,
  under `/v1`:

    POST /v1/chat/completions   OpenAI chat completion; `"stream": true` answers SSE chunks
                                `data: {...}` and then `data: [DONE]`
    POST /v1/embeddings         OpenAI embeddings (floats, or base64 float32 as the SDK asks)
    GET  /v1/models             OpenAI model list
    POST /v1/messages           Anthropic message; `"stream": true` answers the event sequence
                                message_start, content_block_start, ping, content_block_delta...,
                                content_block_stop, message_delta, message_stop

  Answers report token usage as the vendors do (`usage`, by default `USAGE`: 5 input and 6
  output tokens; None leaves it out everywhere): OpenAI's JSON answers in `usage`, its streams in
  a last chunk (`choices: []`) only when the request sets `stream_options.include_usage` (every
  earlier chunk then carries `"usage": null`); Anthropic's JSON answers in `usage`, its streams
  with the input tokens in `message_start` and the output tokens in `message_delta`.

  It can answer 401 with the vendor's own error body (`unauthorized`), hold every stream after its
  first chunk until the test releases it (`hold_streams`/`release_streams`, to prove nobody
  buffers in between), and tell when a client went away (`watch`). With `models_key` set,
  `GET /v1/models` checks the key as a vendor does (`Authorization: Bearer KEY` or
  `x-api-key: KEY`) and answers 401 otherwise: what a provider test (CheckProvider) sends.

`upstream_factory` (tests/conftest.py) starts one in the test's loop: `await upstream_factory()`.
"""

from __future__ import annotations

import array
import asyncio
import base64
import contextlib
import json
import ssl
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import h11

#: The text every vendor answer carries, split into the pieces a stream sends one by one.
STREAM_PIECES: tuple[str, ...] = ("Hello", " from", " the", " fake", " upstream", "!")
ANSWER_TEXT = "".join(STREAM_PIECES)
CREATED = 1_700_000_000
EMBEDDING = (0.25, -0.5, 1.0)
#: The tokens every answer reports by default: (input, output).
USAGE = (5, 6)


@dataclass
class RecordedRequest:
    """One request as it arrived: method, target, header lines in order (names lower-cased;
    `raw_headers` as sent), body; over TLS, the ALPN protocol agreed."""

    method: str
    target: str
    raw_headers: list[tuple[str, str]]
    body: bytes
    alpn: str | None = None

    @property
    def headers(self) -> list[tuple[str, str]]:
        return [(name.lower(), value) for name, value in self.raw_headers]

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def query(self) -> str:
        return self.target.partition("?")[2]

    def header_values(self, name: str) -> list[str]:
        return [v for n, v in self.raw_headers if n.lower() == name.lower()]

    def header(self, name: str) -> str | None:
        """The first value of a header (case-insensitive), or None."""
        values = self.header_values(name)
        return values[0] if values else None

    def json(self) -> Any:
        return json.loads(self.body)


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

    async def json(self, status: int, payload: Any) -> None:
        """A whole JSON answer with its Content-Length."""
        data = json.dumps(payload).encode()
        await self.head(
            status, [("content-type", "application/json"), ("content-length", str(len(data)))]
        )
        await self.chunk(data)
        await self.end()

    def close(self) -> None:
        """Close the connection after a complete answer, as a keep-alive timeout does."""
        self._writer.close()


Handler = Callable[[RecordedRequest, Reply], Awaitable[None]]


async def echo_handler(request: RecordedRequest, reply: Reply) -> None:
    """Answers 200 with a JSON description of the request."""
    await reply.json(
        200, {"method": request.method, "target": request.target, "body": request.body.decode()}
    )


def sse_event(n: int) -> bytes:
    """One server-sent event, as LLM APIs stream them."""
    return f'data: {{"n": {n}}}\n\n'.encode()


class FakeUpstream:
    """The server; `handler` may be swapped by a test at any time."""

    def __init__(self, handler: Handler | None = None, tls: ssl.SSLContext | None = None) -> None:
        self.handler: Handler = handler if handler is not None else VendorApi()
        self.tls = tls
        self.requests: list[RecordedRequest] = []
        self.disconnected = asyncio.Event()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def base_url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def origin(self) -> str:
        """`http://127.0.0.1:<port>`; `VendorApi` serves under `/v1`."""
        return self.base_url

    # -- in the test's event loop ----------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if isinstance(self.handler, VendorApi):
            self.handler.bind(self._loop)
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if isinstance(self.handler, VendorApi):
            self.handler.release_streams()
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        if self._server is not None:
            await self._server.wait_closed()

    # -- on a loop of its own, for synchronous clients -------------------------------------

    def __enter__(self) -> FakeUpstream:
        loop = asyncio.new_event_loop()
        started: list[BaseException | None] = []
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
                started.append(None)
            except BaseException as err:  # reported to the test's thread
                started.append(err)
                return
            finally:
                ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="fake-upstream", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the fake upstream did not start in 10 s")
        if started[0] is not None:
            raise started[0]
        return self

    def __exit__(self, *exc: object) -> None:
        loop, thread = self._loop, self._thread
        assert loop is not None and thread is not None
        asyncio.run_coroutine_threadsafe(self.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()

    # -- controls for tests (VendorApi) ----------------------------------------------------

    @property
    def vendor(self) -> VendorApi:
        assert isinstance(self.handler, VendorApi), "the handler is not VendorApi"
        return self.handler

    @property
    def unauthorized(self) -> bool:
        return self.vendor.unauthorized

    @unauthorized.setter
    def unauthorized(self, value: bool) -> None:
        self.vendor.unauthorized = value

    @property
    def models_key(self) -> str | None:
        return self.vendor.models_key

    @models_key.setter
    def models_key(self, value: str | None) -> None:
        self.vendor.models_key = value

    @property
    def watch(self) -> StreamWatch:
        return self.vendor.watch

    def hold_streams(self) -> None:
        self.vendor.hold_streams()

    def release_streams(self) -> None:
        self.vendor.release_streams()

    def reset(self) -> None:
        """Forget requests; a `VendorApi` answers normally again and stops holding streams."""
        if isinstance(self.handler, VendorApi):
            self.handler.reset()
        with self._lock:
            self.requests.clear()

    def last_request(self) -> RecordedRequest:
        with self._lock:
            assert self.requests, "the upstream received no request"
            return self.requests[-1]

    # -- HTTP/1.1 --------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request = await self._read_request(conn, reader)
                if request is None:
                    return
                tls = writer.get_extra_info("ssl_object")
                if tls is not None:
                    request.alpn = tls.selected_alpn_protocol()
                with self._lock:
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
            self._tasks.discard(task)
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
                    raw_headers=[(n.decode(), v.decode()) for n, v in head.headers.raw_items()],
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
) -> AsyncIterator[FakeUpstream]:
    """A started upstream in this event loop (HTTPS with `tls`); stopped on exit."""
    server = FakeUpstream(handler, tls)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


UpstreamFactory = Callable[..., Awaitable[FakeUpstream]]


# -- VendorApi: OpenAI and Anthropic, as the official SDKs expect them -------------------------


@dataclass
class StreamWatch:
    """What a test can observe of the streams being served (from any thread)."""

    first_chunk_sent: threading.Event = field(default_factory=threading.Event)
    last_chunk_sent: threading.Event = field(default_factory=threading.Event)
    disconnected: threading.Event = field(default_factory=threading.Event)
    disconnected_at: float | None = None


class VendorApi:
    """The handler that speaks enough OpenAI and Anthropic for the official SDKs."""

    def __init__(self) -> None:
        self.unauthorized = False
        self.models_key: str | None = None
        self.usage: tuple[int, int] | None = USAGE
        self.watch = StreamWatch()
        self._hold = False
        self._release = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def hold_streams(self) -> None:
        """From now on every stream pauses after its first chunk until `release_streams()`."""
        self._hold = True

    def release_streams(self) -> None:
        loop, release = self._loop, self._release
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            release.set()
        else:
            loop.call_soon_threadsafe(release.set)

    def reset(self) -> None:
        """Answer normally again, stop holding streams, and watch afresh."""
        self.release_streams()
        self.unauthorized = False
        self.models_key = None
        self.usage = USAGE
        self._hold = False
        self.watch = StreamWatch()
        self._release = asyncio.Event()

    async def __call__(self, request: RecordedRequest, reply: Reply) -> None:
        route = (request.method, request.path)
        is_anthropic = request.path.startswith("/v1/messages")
        if self.unauthorized:
            await reply.json(401, unauthorized_body(is_anthropic))
            return
        payload = _json_or_none(request.body)
        stream = isinstance(payload, dict) and payload.get("stream") is True
        model = str(payload.get("model", "unknown") if isinstance(payload, dict) else "unknown")
        usage = self.usage
        if route == ("POST", "/v1/chat/completions"):
            if stream:
                options = payload.get("stream_options")
                include = isinstance(options, dict) and options.get("include_usage") is True
                await self._stream(reply, openai_events(model, usage if include else None))
            else:
                await reply.json(200, chat_completion(model, usage))
        elif route == ("POST", "/v1/embeddings"):
            fmt = payload.get("encoding_format") if isinstance(payload, dict) else None
            await reply.json(200, embeddings(model, base64_encoded=fmt == "base64"))
        elif route == ("GET", "/v1/models"):
            if self.models_key is not None and self.models_key not in (
                (request.header("authorization") or "").removeprefix("Bearer "),
                request.header("x-api-key"),
            ):
                await reply.json(401, unauthorized_body(False))
            else:
                await reply.json(200, _models())
        elif route == ("POST", "/v1/messages"):
            if stream:
                await self._stream(reply, anthropic_events(model, usage))
            else:
                await reply.json(200, anthropic_message(model, usage))
        else:
            await reply.json(404, not_found_body(is_anthropic, request.path))

    async def _stream(self, reply: Reply, events: list[bytes]) -> None:
        """Send SSE events one by one, holding after the first if asked; the server cancels this
        when the client goes away."""
        watch, release = self.watch, self._release
        try:
            await reply.head(
                200,
                [
                    ("content-type", "text/event-stream; charset=utf-8"),
                    ("cache-control", "no-cache"),
                    ("x-upstream", "fake"),
                ],
            )
            for index, event in enumerate(events):
                if index == 1 and self._hold:
                    await release.wait()
                if index == len(events) - 1:
                    watch.last_chunk_sent.set()  # before: the client may act on it at once
                await reply.chunk(event)
                if index == 0:
                    watch.first_chunk_sent.set()
                # Let each event leave as its own write, as a real model server does.
                await asyncio.sleep(0.005)
            await reply.end()
        except (asyncio.CancelledError, ConnectionError):
            watch.disconnected_at = time.monotonic()
            watch.disconnected.set()
            raise


# -- response bodies, as the vendors document them --------------------------------------------


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None


def unauthorized_body(anthropic: bool) -> dict[str, Any]:
    if anthropic:
        return {
            "type": "error",
            "error": {"type": "authentication_error", "message": "invalid x-api-key"},
        }
    return {
        "error": {
            "message": "Incorrect API key provided. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }


def not_found_body(anthropic: bool, path: str) -> dict[str, Any]:
    """Each vendor's 404 for a path it does not serve, in its own shape."""
    message = f"no route {path}"
    if anthropic:
        return {"type": "error", "error": {"type": "not_found_error", "message": message}}
    return {"error": {"message": message, "type": "invalid_request_error"}}


def chat_completion(model: str, usage: tuple[int, int] | None = USAGE) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": ANSWER_TEXT, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
    }
    if usage is not None:
        answer["usage"] = openai_usage(usage)
    return answer


def openai_usage(usage: tuple[int, int]) -> dict[str, int]:
    inputs, outputs = usage
    return {"prompt_tokens": inputs, "completion_tokens": outputs, "total_tokens": inputs + outputs}


def _sse(data: dict[str, Any] | str, event: str | None = None) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data)
    prefix = f"event: {event}\n" if event else ""
    return f"{prefix}data: {text}\n\n".encode()


def openai_events(model: str, usage: tuple[int, int] | None = None) -> list[bytes]:
    """A chat completion's chunks; with `usage` (the client set `stream_options.include_usage`)
    every chunk has `"usage": null` and a last one before `[DONE]` carries the counts."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        event: dict[str, Any] = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if usage is not None:
            event["usage"] = None
        return event

    chunks = [chunk({"role": "assistant", "content": STREAM_PIECES[0]})]
    chunks += [chunk({"content": piece}) for piece in STREAM_PIECES[1:]]
    chunks.append(chunk({}, "stop"))
    if usage is not None:
        chunks.append(chunk({}) | {"choices": [], "usage": openai_usage(usage)})
    return [_sse(c) for c in chunks] + [_sse("[DONE]")]


def embeddings(model: str, *, base64_encoded: bool) -> dict[str, Any]:
    vector: Any = list(EMBEDDING)
    if base64_encoded:
        vector = base64.b64encode(array.array("f", EMBEDDING).tobytes()).decode()
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": vector}],
        "model": model,
        "usage": {"prompt_tokens": 2, "total_tokens": 2},
    }


def _models() -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"id": "gpt-4", "object": "model", "created": CREATED, "owned_by": "openai"},
        ],
    }


def anthropic_message(model: str, usage: tuple[int, int] | None = USAGE) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": ANSWER_TEXT}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
    }
    if usage is not None:
        answer["usage"] = {"input_tokens": usage[0], "output_tokens": usage[1]}
    return answer


def anthropic_events(model: str, usage: tuple[int, int] | None = USAGE) -> list[bytes]:
    start = anthropic_message(model, None) | {"content": [], "stop_reason": None}
    if usage is not None:
        start["usage"] = {"input_tokens": usage[0], "output_tokens": 1}
    events = [
        _sse({"type": "message_start", "message": start}, "message_start"),
        _sse(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
            "content_block_start",
        ),
        _sse({"type": "ping"}, "ping"),
    ]
    events += [
        _sse(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": piece},
            },
            "content_block_delta",
        )
        for piece in STREAM_PIECES
    ]
    events += [
        _sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
        _sse(
            {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}}
            | ({"usage": {"output_tokens": usage[1]}} if usage is not None else {}),
            "message_delta",
        ),
        _sse({"type": "message_stop"}, "message_stop"),
    ]
    return events
