"""A real local HTTP server that speaks enough OpenAI and Anthropic for the official SDKs.

It runs uvicorn on `127.0.0.1:0` in a thread of its own (so synchronous SDK clients, the
gateway's event loop and this server never wait on each other) and serves, under `/v1`:

    POST /v1/chat/completions   OpenAI chat completion; `"stream": true` answers SSE chunks
                                `data: {...}` and then `data: [DONE]`
    POST /v1/embeddings         OpenAI embeddings (floats, or base64 float32 as the SDK asks)
    GET  /v1/models             OpenAI model list
    POST /v1/messages           Anthropic message; `"stream": true` answers the event sequence
                                message_start, content_block_start, ping, content_block_delta...,
                                content_block_stop, message_delta, message_stop

Every request is recorded (method, path, query, headers, body bytes). A test can make it answer
401 with the vendor's own error body, hold every stream after its first chunk until the test
releases it (to prove nobody buffers in between), and see when a client went away. With
`models_key` set, `GET /v1/models` checks the key as a vendor does (`Authorization: Bearer KEY`
or `x-api-key: KEY`) and answers 401 otherwise: what a provider test (CheckProvider) sends.
"""

from __future__ import annotations

import array
import asyncio
import base64
import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import uvicorn

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: The text every answer carries, split into the pieces a stream sends one by one.
STREAM_PIECES: tuple[str, ...] = ("Hello", " from", " the", " fake", " upstream", "!")
ANSWER_TEXT = "".join(STREAM_PIECES)
CREATED = 1_700_000_000
EMBEDDING = (0.25, -0.5, 1.0)


@dataclass(frozen=True)
class RecordedRequest:
    """One request exactly as the upstream received it."""

    method: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of a header (case-insensitive), or None."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key == wanted), None)

    def header_values(self, name: str) -> list[str]:
        wanted = name.lower()
        return [value for key, value in self.headers if key == wanted]

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class _StreamWatch:
    """What a test can observe of the streams being served."""

    first_chunk_sent: threading.Event = field(default_factory=threading.Event)
    last_chunk_sent: threading.Event = field(default_factory=threading.Event)
    disconnected: threading.Event = field(default_factory=threading.Event)
    disconnected_at: float | None = None


class FakeUpstream:
    """The server; use `with FakeUpstream() as upstream:` or `start()`/`stop()`."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.unauthorized = False
        self.models_key: str | None = None
        self.watch = _StreamWatch()
        self._lock = threading.Lock()
        self._hold = False
        self._release: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._socket is not None, "not started"
        return int(self._socket.getsockname()[1])

    @property
    def origin(self) -> str:
        """`http://127.0.0.1:<port>`; the APIs live under `/v1`."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeUpstream:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._socket = sock
        config = uvicorn.Config(
            self._app,
            log_level="warning",
            lifespan="off",
            ws="none",
            interface="asgi3",
            loop="asyncio",
            access_log=False,
        )
        self._server = uvicorn.Server(config)
        started = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            self._release = asyncio.Event()
            loop.call_soon(started.set)
            assert self._server is not None
            loop.run_until_complete(self._server.serve(sockets=[sock]))
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-upstream", daemon=True)
        self._thread.start()
        started.wait(5)
        deadline = time.monotonic() + 5
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fake upstream did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self.release_streams()
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        if self._socket is not None:
            self._socket.close()

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- controls for tests ----------------------------------------------------------------

    def reset(self) -> None:
        """Forget requests, answer normally again, and stop holding streams."""
        self.release_streams()
        with self._lock:
            self.requests.clear()
            self.unauthorized = False
            self.models_key = None
            self._hold = False
            self.watch = _StreamWatch()
        if self._loop is not None:
            fresh = threading.Event()

            def renew() -> None:
                self._release = asyncio.Event()
                fresh.set()

            self._loop.call_soon_threadsafe(renew)
            fresh.wait(5)

    def hold_streams(self) -> None:
        """From now on every stream pauses after its first chunk until `release_streams()`."""
        self._hold = True

    def release_streams(self) -> None:
        loop, release = self._loop, self._release
        if loop is not None and release is not None and not loop.is_closed():
            loop.call_soon_threadsafe(release.set)

    def last_request(self) -> RecordedRequest:
        with self._lock:
            assert self.requests, "the upstream received no request"
            return self.requests[-1]

    # -- the ASGI application --------------------------------------------------------------

    async def _app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = RecordedRequest(
            method=scope["method"],
            path=scope["path"],
            query=scope.get("query_string", b"").decode("latin-1"),
            headers=tuple(
                (k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]
            ),
            body=bytes(body),
        )
        with self._lock:
            self.requests.append(request)
        route = (request.method, request.path)
        is_anthropic = request.path.startswith("/v1/messages")
        if self.unauthorized:
            await _send_json(send, 401, unauthorized_body(is_anthropic))
            return
        payload = _json_or_none(request.body)
        stream = isinstance(payload, dict) and payload.get("stream") is True
        model = payload.get("model", "unknown") if isinstance(payload, dict) else "unknown"
        if route == ("POST", "/v1/chat/completions"):
            if stream:
                await self._stream(receive, send, openai_events(str(model)))
            else:
                await _send_json(send, 200, chat_completion(str(model)))
        elif route == ("POST", "/v1/embeddings"):
            fmt = payload.get("encoding_format") if isinstance(payload, dict) else None
            await _send_json(send, 200, embeddings(str(model), base64_encoded=fmt == "base64"))
        elif route == ("GET", "/v1/models"):
            if self.models_key is not None and self.models_key not in (
                (request.header("authorization") or "").removeprefix("Bearer "),
                request.header("x-api-key"),
            ):
                await _send_json(send, 401, unauthorized_body(False))
            else:
                await _send_json(send, 200, _models())
        elif route == ("POST", "/v1/messages"):
            if stream:
                await self._stream(receive, send, anthropic_events(str(model)))
            else:
                await _send_json(send, 200, anthropic_message(str(model)))
        else:
            await _send_json(send, 404, not_found_body(is_anthropic, request.path))

    async def _stream(self, receive: Receive, send: Send, events: list[bytes]) -> None:
        """Send SSE events one by one, holding after the first if asked, watching the client."""
        watch = self.watch
        release = self._release
        assert release is not None

        async def watch_disconnect() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    watch.disconnected_at = time.monotonic()
                    watch.disconnected.set()
                    return

        async def write() -> None:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"text/event-stream; charset=utf-8"),
                        (b"cache-control", b"no-cache"),
                        (b"x-upstream", b"fake"),
                    ],
                }
            )
            for index, event in enumerate(events):
                if index == 1 and self._hold:
                    await release.wait()
                if index == len(events) - 1:
                    watch.last_chunk_sent.set()  # before: the client may act on it at once
                await send({"type": "http.response.body", "body": event, "more_body": True})
                if index == 0:
                    watch.first_chunk_sent.set()
                # Let each event leave as its own write, as a real model server does.
                await asyncio.sleep(0.005)
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        watcher = asyncio.create_task(watch_disconnect())
        writer = asyncio.create_task(write())
        done, _ = await asyncio.wait({watcher, writer}, return_when=asyncio.FIRST_COMPLETED)
        if watcher in done:
            writer.cancel()
        else:
            watcher.cancel()
        await asyncio.gather(watcher, writer, return_exceptions=True)


# -- response bodies, as the vendors document them --------------------------------------------


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None


async def _send_json(send: Send, status: int, payload: Any) -> None:
    data = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


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


def chat_completion(model: str) -> dict[str, Any]:
    return {
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
        "usage": {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11},
    }


def _sse(data: dict[str, Any] | str, event: str | None = None) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data)
    prefix = f"event: {event}\n" if event else ""
    return f"{prefix}data: {text}\n\n".encode()


def openai_events(model: str) -> list[bytes]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return _sse(
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": CREATED,
                "model": model,
                "system_fingerprint": None,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
        )

    events = [chunk({"role": "assistant", "content": STREAM_PIECES[0]})]
    events += [chunk({"content": piece}) for piece in STREAM_PIECES[1:]]
    events.append(chunk({}, "stop"))
    events.append(_sse("[DONE]"))
    return events


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


def anthropic_message(model: str) -> dict[str, Any]:
    return {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": ANSWER_TEXT}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 5, "output_tokens": 6},
    }


def anthropic_events(model: str) -> list[bytes]:
    start = anthropic_message(model) | {
        "content": [],
        "stop_reason": None,
        "usage": {"input_tokens": 5, "output_tokens": 1},
    }
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
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": 6},
            },
            "message_delta",
        ),
        _sse({"type": "message_stop"}, "message_stop"),
    ]
    return events
