"""Relaying the router's `Invoke` stream to an HTTP client as it arrives.

`RouterRelay` is the ASGI response of a streamed model call (the client asked for `stream`). The
router's first message is the upstream's status and headers; every later one a body chunk, which
goes to the client at once (no buffering; `Transfer-Encoding: chunked`). Non-streamed calls are
answered from the router's `InvokeBuffered` instead (`buffered_answer.py`), with the helpers here.

Credential warnings (`x-credential-warning`) are read from the call's initial metadata (known
before the first byte); each becomes one `X-Credential-Warning` response header.

The client going away cancels the gRPC call, which cancels the upstream request. A failure after
the head was sent ends an event stream with one error event in the vendor's shape; any other body
is cut off (the connection is closed without the final chunk) so the client cannot mistake a
truncated answer for a whole one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping, Sequence
from typing import Any, Generic, Protocol, TypeVar

import grpc
import grpc.aio
from aicreds.router.v1 import router_pb2
from starlette.responses import Response

from services.common.http_headers import GATEWAY_RESPONSE_HEADERS, HOP_BY_HOP
from services.common.invoke_streams import CREDENTIAL_WARNING_KEY
from services.gateway.errors import ApiError, from_rpc_error
from services.gateway.router_streams import StreamCall

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

WARNING_HEADER = "x-credential-warning"
UPSTREAM_REQUEST_ID = "x-upstream-request-id"
#: A non-streamed answer up to this size gets a Content-Length; a longer one is sent chunked.
BUFFER_LIMIT = 8 * 1024 * 1024
#: Added to an event stream's headers, so that no proxy on the way buffers it.
EVENT_STREAM_HEADERS = [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]

#: Response headers not relayed: hop-by-hop ones (RFC 9110 7.6.1), plus those the gateway sets
#: itself: the length (we re-frame the body), the date and server of our hop, the upstream's
#: cookies, which belong to the upstream's site, not ours, and `GATEWAY_RESPONSE_HEADERS`
#: (debug, warnings, rate limits; the router drops them too, this holds for any router).
DROPPED_RESPONSE_HEADERS = (
    HOP_BY_HOP | GATEWAY_RESPONSE_HEADERS | {"content-length", "date", "server", "set-cookie"}
)

_log = logging.getLogger("aicreds.gateway.llm")

#: An error as a whole answer in a vendor's shape; a stream's last event in that shape.
ErrorResponse = Callable[[ApiError], Response]
StreamErrorEvent = Callable[[ApiError], bytes]


class RelayInterrupted(Exception):
    """The router's stream failed after the response head was sent; the body is cut off."""


def relayed_headers(head: router_pb2.ResponseHead) -> list[tuple[bytes, bytes]]:
    """The upstream's headers a client may see.

    The upstream's `x-request-id` is renamed `x-upstream-request-id`: the gateway sets its own
    `x-request-id` on every answer, and the client should be able to quote both.
    """
    headers: list[tuple[bytes, bytes]] = []
    for header in head.headers:
        name = header.name.lower()
        if name in DROPPED_RESPONSE_HEADERS:
            continue
        if name == "x-request-id":
            name = UPSTREAM_REQUEST_ID
        headers.append((name.encode("latin-1"), header.value.encode("latin-1")))
    return headers


def credential_warnings(*metadata: Any) -> list[str]:
    """The `x-credential-warning` entries of gRPC metadata, in order, each once."""
    warnings: list[str] = []
    for items in metadata:
        for item in items or ():
            name, value = item[0], item[1]
            if name != CREDENTIAL_WARNING_KEY:
                continue
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            if text not in warnings:
                warnings.append(text)
    return warnings


def is_event_stream(headers: Sequence[tuple[bytes, bytes]]) -> bool:
    """Whether relayed headers say `Content-Type: text/event-stream`."""
    content_type = next((v for k, v in headers if k == b"content-type"), b"")
    return content_type.startswith(b"text/event-stream")


def warning_headers(warnings: Iterable[str]) -> list[tuple[bytes, bytes]]:
    # A header value must stay on one line; warnings name keys only, but be strict anyway.
    return [
        (WARNING_HEADER.encode(), " ".join(w.split()).encode("latin-1", "replace"))
        for w in warnings
    ]


class _Cancellable(Protocol):
    def cancel(self) -> bool: ...


CallT = TypeVar("CallT", bound=_Cancellable)


class RouterAnswer(Response, Generic[CallT]):
    """What the ASGI responses of a router call share: the call, the vendor error renderer,
    the gateway's extra headers, and cancelling the call when the client goes away.

    A `Response` only so that it can be returned from an endpoint; status and headers are not
    known until the router answered, so `status_code` and `headers` stay unset here.
    """

    def __init__(
        self,
        call: CallT,
        *,
        render_error: ErrorResponse,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status_code = 200
        self.background = None
        self.raw_headers = []
        self._call = call
        self._client_gone = False
        self._render_error = render_error
        self._extra = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in (extra_headers or {}).items()
        ]

    async def _cancel_when_gone(self, receive: Receive) -> None:
        await wait_for_disconnect(receive)
        self._client_gone = True
        self._call.cancel()

    async def _send_error(
        self, error: ApiError, scope: Scope, receive: Receive, send: Send
    ) -> None:
        response = self._render_error(error)
        response.raw_headers.extend(self._extra)
        await response(scope, receive, send)


class RouterRelay(RouterAnswer[StreamCall]):
    """The ASGI response relaying one `RouterService.Invoke` call (on a stream of the gateway's
    or as an RPC of its own: `services.gateway.router_streams.StreamCall`)."""

    def __init__(
        self,
        call: StreamCall,
        *,
        render_error: ErrorResponse,
        stream_error_event: StreamErrorEvent,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(call, render_error=render_error, extra_headers=extra_headers)
        self._complete = False
        self._stream_error_event = stream_error_event

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The relay runs in this task; one watcher task waits for the client to go away and
        # then cancels the router call, which makes the pending `read()` raise CancelledError.
        watcher = asyncio.ensure_future(self._cancel_when_gone(receive))
        try:
            await self._relay_call(scope, receive, send)
            self._complete = True
        except asyncio.CancelledError:
            if not self._client_gone:
                raise  # the server is stopping this request; `finally` cancels the call
            _log.info("client gone before the answer ended; router call cancelled")
        finally:
            watcher.cancel()
            if not self._complete:
                # Unless the answer is complete, stop the router call, and so the upstream
                # request, at once (the client went away, the server is stopping this
                # request, or relaying failed).
                self._call.cancel()

    async def _relay_call(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            first = await self._call.read()
        except grpc.aio.AioRpcError as err:
            await self._send_error(from_rpc_error(err, "router"), scope, receive, send)
            return
        if first is grpc.aio.EOF or not first.HasField("head"):
            error = ApiError(502, "bad_gateway", "the router answered without a response head")
            await self._send_error(error, scope, receive, send)
            return
        head = first.head
        headers = relayed_headers(head) + self._extra
        warnings = credential_warnings(await self._call.initial_metadata())
        event_stream = is_event_stream(headers)
        if event_stream:
            headers += EVENT_STREAM_HEADERS
        headers += warning_headers(warnings)
        await send({"type": "http.response.start", "status": head.status, "headers": headers})
        try:
            while True:
                message = await self._call.read()
                if message is grpc.aio.EOF:
                    break
                if message.chunk:
                    await send(
                        {"type": "http.response.body", "body": message.chunk, "more_body": True}
                    )
        except grpc.aio.AioRpcError as err:
            error = from_rpc_error(err, "router")
            _log.warning(
                "router stream failed after the head was sent",
                extra={"fields": {"grpc_code": err.code().name, "code": error.code}},
            )
            if not event_stream:
                raise RelayInterrupted(f"router stream failed: {err.code().name}") from None
            event = self._stream_error_event(error)
            await send({"type": "http.response.body", "body": event, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def wait_for_disconnect(receive: Receive) -> None:
    """Return when the client has gone away (the request body was read before)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
