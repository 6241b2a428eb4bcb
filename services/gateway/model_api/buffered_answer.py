"""Answering a non-streamed model call from the router's `InvokeBuffered`: one message with the
upstream's status, headers, whole body and credential warnings.

The HTTP answer is the one the streamed relay (`stream_relay.RouterRelay`) gave such a call before
`InvokeBuffered` existed, so that clients see no difference:

- a body of at most `BUFFER_LIMIT` (8 MiB) with `Content-Length`, the warnings as
  `X-Credential-Warning` headers;
- a longer body, or an event stream (`text/event-stream`, which the client did not ask for),
  without a length (`Transfer-Encoding: chunked`), an event stream also with
  `Cache-Control: no-cache` and `X-Accel-Buffering: no`;
- a router error in the vendor's error shape (nothing was sent before it, so it is always a
  clean error; the router fails a buffered call whose upstream broke mid-body, or whose body is
  over the router's 32 MiB limit).

The call is a unary `InvokeBuffered` or one on a long-lived stream (`router_streams`); both are
awaited and cancelled alike. The client going away before the answer cancels the call, which
cancels the upstream request.
"""

from __future__ import annotations

import asyncio
import logging

import grpc.aio
from aicreds.router.v1 import router_pb2

from services.gateway.errors import ApiError, from_rpc_error
from services.gateway.model_api.stream_relay import (
    BUFFER_LIMIT,
    EVENT_STREAM_HEADERS,
    Receive,
    RouterAnswer,
    Scope,
    Send,
    is_event_stream,
    relayed_headers,
    warning_headers,
)
from services.gateway.router_streams import BufferedCall

_log = logging.getLogger("aicreds.gateway.llm")


class BufferedAnswer(RouterAnswer[BufferedCall]):
    """The ASGI response of one `RouterService.InvokeBuffered` call (a `BufferedCall`: grpc.aio's
    unary call, or `router_streams.StreamedCall`)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        reply = await self._answer(receive)
        if reply is None:
            return
        if isinstance(reply, ApiError):
            await self._send_error(reply, scope, receive, send)
            return
        await self._send(reply, send)

    async def _answer(
        self, receive: Receive
    ) -> router_pb2.InvokeBufferedResponse | ApiError | None:
        """The router's answer, its error, or None when the client went away first."""
        watcher = asyncio.ensure_future(self._cancel_when_gone(receive))
        try:
            reply: router_pb2.InvokeBufferedResponse = await self._call
        except grpc.aio.AioRpcError as err:
            return from_rpc_error(err, "router")
        except asyncio.CancelledError:
            if not self._client_gone:
                raise  # the server is stopping this request; `finally` cancels the call
            _log.info("client gone before the answer ended; router call cancelled")
            return None
        finally:
            watcher.cancel()
            # Our own task cancelled (the server stopping): stop the router call too.
            self._call.cancel()
        if not reply.HasField("head"):
            return ApiError(502, "bad_gateway", "the router answered without a response head")
        return reply

    async def _send(self, reply: router_pb2.InvokeBufferedResponse, send: Send) -> None:
        headers = relayed_headers(reply.head) + self._extra
        event_stream = is_event_stream(headers)
        if event_stream:
            headers += EVENT_STREAM_HEADERS
        headers += warning_headers(dict.fromkeys(reply.warnings))
        body = reply.body
        status = reply.head.status
        if event_stream or len(body) > BUFFER_LIMIT:
            # As the streamed relay framed such an answer: no length, chunked.
            await send({"type": "http.response.start", "status": status, "headers": headers})
            if body:
                await send({"type": "http.response.body", "body": body, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
