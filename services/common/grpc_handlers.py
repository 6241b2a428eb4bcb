"""The one place where a gRPC server authenticates callers, maps errors and logs access.

`build_interceptors` returns a `grpc.aio.ServerInterceptor` that wraps every handler so that:

1. the caller is authenticated from metadata `authorization: Bearer <caller token>` against the
   server's `CallerRegistry` (UNAUTHENTICATED if missing or unknown) and must hold the right the
   method needs (PERMISSION_DENIED otherwise, also for methods with no right configured);
   gRPC health checking and reflection are open to everyone;
2. an `AicredsError` raised by the handler becomes the status its `kind` names, with its public
   message as details and its `reason` in trailing metadata `x-error-reason`; any other exception
   becomes INTERNAL with the fixed text `internal error` — its message is never sent or logged,
   since in a vault that is how secrets leak;
3. one JSON access-log line is written per RPC: method, caller, status, duration, request id.
   Never request or response content;
4. with `metrics` (`services.common.metrics.RpcMetrics`), the RPC is counted by method and
   status code, its latency observed, and it is in flight meanwhile: once per RPC, denied ones
   included, from the same code and clock as the access log.
5. with a tracer (tracing on), each RPC is a SERVER span under the caller's `traceparent`
   (`services.common.tracing`; `rpc_tracing.py` names it and its attributes).

The interceptor authenticates in `intercept_service` and hands the RPC's facts to the handler
through a context variable: grpc.aio runs both in the RPC's own task. So the wrapped handler is
made once per method, not per call.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from typing import Any

import grpc
import grpc.aio
from opentelemetry.trace import Tracer

from services.common import request_context
from services.common.after_answer import after_answer
from services.common.callers import Caller, CallerRegistry, Right
from services.common.error_reason import ERROR_REASON_KEY, reason_metadata
from services.common.errors import AicredsError
from services.common.metrics import MethodMetrics, RpcMetrics
from services.common.rpc_tracing import start_rpc_span

__all__ = [
    "ERROR_REASON_KEY",
    "STATUS_BY_KIND",
    "build_interceptors",
    "record_streamed_request",
    "status_of",
]
_OPEN_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)

STATUS_BY_KIND: Mapping[str, grpc.StatusCode] = {
    "invalid_argument": grpc.StatusCode.INVALID_ARGUMENT,
    "unauthenticated": grpc.StatusCode.UNAUTHENTICATED,
    "permission_denied": grpc.StatusCode.PERMISSION_DENIED,
    "not_found": grpc.StatusCode.NOT_FOUND,
    "already_exists": grpc.StatusCode.ALREADY_EXISTS,
    "failed_precondition": grpc.StatusCode.FAILED_PRECONDITION,
    "resource_exhausted": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "unavailable": grpc.StatusCode.UNAVAILABLE,
    "deadline_exceeded": grpc.StatusCode.DEADLINE_EXCEEDED,
    "internal": grpc.StatusCode.INTERNAL,
}

access_log = logging.getLogger("aicreds.access")
_log = logging.getLogger("aicreds.grpc")


def build_interceptors(
    *,
    service: str,
    callers: CallerRegistry,
    required_rights: Mapping[str, Right],
    metrics: RpcMetrics | None = None,
    tracer: Tracer | None = None,
) -> list[grpc.aio.ServerInterceptor]:
    """Interceptors for a server whose methods need the given rights (full method names);
    with `metrics`, every RPC is also recorded there; with `tracer`, every RPC but health and
    reflection is a span."""
    return [_ServiceInterceptor(service, callers, dict(required_rights), metrics, tracer)]


def _metadata_value(metadata: Sequence[Any] | None, key: str) -> str | None:
    for item in metadata or ():
        if item[0] == key:
            value = item[1]
            return value.decode("latin-1") if isinstance(value, bytes) else str(value)
    return None


def _bearer(metadata: Sequence[Any] | None) -> str | None:
    header = _metadata_value(metadata, "authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


# The RPC being handled. grpc.aio runs the server interceptor and then the handler in the one
# task it makes for each RPC, so what `intercept_service` sets here is what the handler sees,
# and nothing outlives the RPC's task.
_current_call: ContextVar[_Call] = ContextVar("aicreds_rpc_call")


class _ServiceInterceptor(grpc.aio.ServerInterceptor):
    def __init__(
        self,
        service: str,
        callers: CallerRegistry,
        rights: dict[str, Right],
        metrics: RpcMetrics | None,
        tracer: Tracer | None = None,
    ) -> None:
        self._service = service
        self._callers = callers
        self._rights = rights
        self._metrics = metrics
        self._tracer = tracer
        # method -> (the service's handler, our wrapper of it), made once per method.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(_OPEN_PREFIXES):
            return handler
        metadata = handler_call_details.invocation_metadata
        request_id = (
            _metadata_value(metadata, request_context.REQUEST_ID_KEY)
            or request_context.new_request_id()
        )
        token = _bearer(metadata)
        caller = self._callers.authenticate(token) if token is not None else None
        denial: tuple[grpc.StatusCode, str] | None = None
        if caller is None:
            reason = "no caller token" if token is None else "unknown caller token"
            denial = (grpc.StatusCode.UNAUTHENTICATED, f"caller not authenticated: {reason}")
        else:
            needed = self._rights.get(method)
            if needed is None or not caller.has(needed):
                what = needed.value if needed is not None else "a right this server does not grant"
                denial = (
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"caller {caller.name!r} lacks the right {what!r} for {method}",
                )
        _current_call.set(_Call(self._service, method, caller, request_id, denial, self._metrics))
        request_context._caller.set(caller)
        request_context._request_id.set(request_id)
        wrapped = self._wrapped.get(method)
        if wrapped is None or wrapped[0] is not handler:
            observed = self._metrics.for_method(method) if self._metrics else None
            wrapped = (handler, _wrap(handler, method, observed, self._tracer))
            self._wrapped[method] = wrapped
        return wrapped[1]


class _Call:
    """What the wrapper needs to know about one RPC."""

    __slots__ = ("service", "method", "caller", "request_id", "denial", "code", "metrics")

    def __init__(
        self,
        service: str,
        method: str,
        caller: Caller | None,
        request_id: str,
        denial: tuple[grpc.StatusCode, str] | None,
        metrics: RpcMetrics | None = None,
    ) -> None:
        self.service = service
        self.method = method
        self.caller = caller
        self.request_id = request_id
        self.denial = denial
        # The server's RPC metrics (when exported), for the requests a stream carries.
        self.metrics = metrics
        # The status the wrapper ended the RPC with, when it did (else the context's).
        self.code: grpc.StatusCode | None = None


def _wrap(
    handler: grpc.RpcMethodHandler,
    method: str,
    observed: MethodMetrics | None,
    tracer: Tracer | None,
) -> grpc.RpcMethodHandler:
    """The handler run inside the checks, error mapping, access log, metrics and span (one per
    method)."""
    in_flight = observed.in_flight if observed is not None else None
    if handler.unary_unary is not None:
        inner_uu = handler.unary_unary

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            call = _current_call.get()
            start = time.perf_counter()
            if in_flight is not None:
                in_flight.inc()
            span = start_rpc_span(tracer, method, context) if tracer is not None else None
            try:
                if call.denial is not None:
                    call.code = call.denial[0]
                    await context.abort(*call.denial)
                try:
                    return await inner_uu(request, context)
                except BaseException as err:
                    await _fail(call, context, err)
            finally:
                _finished(call, context, start, observed)
                if span is not None:
                    span.end(_status(call, context))
            return None  # pragma: no cover - _fail always raises

        return grpc.unary_unary_rpc_method_handler(
            unary_unary, handler.request_deserializer, handler.response_serializer
        )

    def streamed(inner: Callable[[Any, grpc.aio.ServicerContext], Any], bidi: bool) -> Any:
        """The wrapper of a method that answers a stream (its request one message or a stream:
        the checks run once, when it opens; the access-log line, the metrics and the span are
        the RPC's as a whole).

        A bidi stream that passed them is accepted at once with (empty) initial metadata: its
        clients (`services.router.resolve_stream`, `services.gateway.router_streams`) wait for
        that, or for the refusal, before they write. A client message in flight when the server
        ends the RPC fails in grpc.aio, and grpc.aio then replaces the RPC's status with
        INTERNAL ("Internal error from Core"), so a refused stream's calls would see INTERNAL
        instead of the refusal's status."""

        async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            call = _current_call.get()
            start = time.perf_counter()
            if in_flight is not None:
                in_flight.inc()
            span = start_rpc_span(tracer, method, context) if tracer is not None else None
            try:
                if call.denial is not None:
                    call.code = call.denial[0]
                    await context.abort(*call.denial)
                if bidi:
                    await context.send_initial_metadata(())
                try:
                    result = inner(request, context)
                    if inspect.isasyncgen(result):
                        async for item in result:
                            yield item
                    else:
                        await result
                except BaseException as err:
                    await _fail(call, context, err)
            finally:
                _finished(call, context, start, observed)
                if span is not None:
                    span.end(_status(call, context))

        return streaming

    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            streamed(handler.unary_stream, bidi=False),
            handler.request_deserializer,
            handler.response_serializer,
        )
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(
            streamed(handler.stream_stream, bidi=True),
            handler.request_deserializer,
            handler.response_serializer,
        )
    raise TypeError(
        f"{method}: only unary-unary, unary-stream and stream-stream methods are supported"
    )


CODE_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}
"""gRPC status codes by number (grpc.aio reports some as plain integers)."""


def _finished(
    call: _Call, context: grpc.aio.ServicerContext, start: float, observed: MethodMetrics | None
) -> None:
    """An RPC is over: its metrics (if kept) and its access-log line."""
    if observed is not None:
        observed.in_flight.dec()
        observed.finished(_status(call, context), time.perf_counter() - start)
    _log_access(call, context, start)


def _status(call: _Call, context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    """The status the RPC ended with."""
    code = call.code or context.code() or grpc.StatusCode.OK
    if isinstance(code, int):  # aio may report the raw integer
        code = CODE_BY_NUMBER.get(code, grpc.StatusCode.UNKNOWN)
    return code


def _log_access(call: _Call, context: grpc.aio.ServicerContext, start: float) -> None:
    """The one access-log line of an RPC (made without logging's caller lookup)."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    elapsed = time.perf_counter() - start
    _write_access_line(call, call.method, _status(call, context), elapsed, call.request_id, None)


def record_streamed_request(method: str, code: grpc.StatusCode, start: float) -> None:
    """One request carried on the streaming RPC being handled (the vault's lookups on
    `ResolveStream`) is over: it is counted and timed as a call of `method` (with the server's
    metrics, when exported) and gets the access-log line such a call would, with the current
    request id and `via` naming the stream's method. `start`: `time.perf_counter()` when the
    request was read."""
    call = _current_call.get(None)
    if call is None:  # not inside an RPC of an intercepted server: nothing to record
        return
    # Measured now; counted and logged once the answer is on its way (`after_answer`).
    after_answer(_record_streamed, call, method, code, time.perf_counter() - start)


def _record_streamed(call: _Call, method: str, code: grpc.StatusCode, elapsed: float) -> None:
    if call.metrics is not None:
        call.metrics.for_method(method).finished(code, elapsed)
    if access_log.isEnabledFor(logging.INFO):
        _write_access_line(
            call, method, code, elapsed, request_context.current_request_id(), call.method
        )


def _write_access_line(
    call: _Call,
    method: str,
    code: grpc.StatusCode,
    elapsed: float,
    request_id: str,
    via: str | None,
) -> None:
    fields = {
        "service": call.service,
        "method": method,
        "caller": call.caller.name if call.caller else None,
        "code": code.name,
        "ms": round(elapsed * 1000, 3),
        "request_id": request_id,
    }
    if via is not None:
        fields["via"] = via
    access_log.handle(
        access_log.makeRecord(
            access_log.name,
            logging.INFO,
            "(unknown file)",
            0,
            "rpc",
            (),
            None,
            extra={"fields": fields},
        )
    )


def status_of(err: Exception, method: str) -> tuple[grpc.StatusCode, str, str]:
    """The status an exception from a handler of `method` ends its RPC with: (code, public
    message, reason). Also for each request of a stream that answers requests one by one
    (the vault's `ResolveStream`), so that they fail exactly as the unary RPC would."""
    if isinstance(err, AicredsError):
        return STATUS_BY_KIND.get(err.kind, grpc.StatusCode.INTERNAL), err.message, err.reason
    # Only the type and where it was raised: an exception's text may carry a secret.
    frame = err.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    where = f"{frame.tb_frame.f_code.co_filename}:{frame.tb_lineno}" if frame else "?"
    _log.error(
        "unhandled error",
        extra={"fields": {"method": method, "error": type(err).__name__, "where": where}},
    )
    return grpc.StatusCode.INTERNAL, "internal error", ""


async def _fail(call: _Call, context: grpc.aio.ServicerContext, err: BaseException) -> None:
    """Turn an exception from the handler into a status (recorded in `call.code`); always
    raises."""
    if isinstance(err, grpc.aio.AbortError):
        raise err
    if isinstance(err, Exception):
        code, message, reason = status_of(err, call.method)
        call.code = code
        if reason:
            trailing = tuple(context.trailing_metadata() or ()) + reason_metadata(reason)
            context.set_trailing_metadata(trailing)
        await context.abort(code, message)
    call.code = grpc.StatusCode.CANCELLED
    raise err
