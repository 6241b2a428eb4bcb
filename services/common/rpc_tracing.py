"""The SERVER span of one gRPC call (used by the interceptor, `grpc_handlers.py`).

Name: the full method without its leading slash (`aicreds.vault.v1.CredentialService/Resolve`),
as the OpenTelemetry RPC conventions ask. Attributes: `rpc.system`, `rpc.service`,
`rpc.method` and, at the end, `rpc.grpc.status_code`; a status the conventions count as the
server's fault (UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS)
marks the span as an error. Nothing of the request, its metadata or the caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
import grpc.aio
from opentelemetry.trace import Tracer

from services.common.tracing import TRACEPARENT, TRACESTATE, ServerSpan, start_server_span

_SERVER_FAULTS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


class RpcSpan:
    """A started RPC span; `end` it with the RPC's status in the task that started it."""

    __slots__ = ("_span",)

    def __init__(self, span: ServerSpan) -> None:
        self._span = span

    def end(self, code: grpc.StatusCode) -> None:
        self._span.end({"rpc.grpc.status_code": code.value[0]}, failed=code in _SERVER_FAULTS)


def _trace_context(metadata: Sequence[Any]) -> tuple[str | None, str | None]:
    """The first `traceparent` and `tracestate` of the metadata, in one pass."""
    found: dict[str, str] = {}
    for key, value in metadata:
        if key in (TRACEPARENT, TRACESTATE) and key not in found:
            found[key] = value.decode("latin-1") if isinstance(value, bytes) else str(value)
    return found.get(TRACEPARENT), found.get(TRACESTATE)


def start_rpc_span(tracer: Tracer, method: str, context: grpc.aio.ServicerContext) -> RpcSpan:
    """Start the span of the RPC `method` (`/package.Service/Method`) and make it current."""
    traceparent, tracestate = _trace_context(context.invocation_metadata() or ())
    name = method.lstrip("/")
    service, _, rpc_method = name.rpartition("/")
    span = start_server_span(
        tracer,
        name,
        {"rpc.system": "grpc", "rpc.service": service, "rpc.method": rpc_method},
        traceparent=traceparent,
        tracestate=tracestate,
        # grpc.aio runs each RPC in a task of its own, whose context ends with it (as the
        # interceptor's request id does). Restoring it would fail, with an error logged, when
        # a streaming handler parked at a `yield` is closed later by the event loop's
        # finalizer, in another task.
        restore_context=False,
    )
    return RpcSpan(span)
