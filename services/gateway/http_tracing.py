"""The gateway's SERVER span of one HTTP request (used by `middleware.py` when tracing is on).

The client's `traceparent` and `tracestate` headers are honoured: a valid one makes the span
its child (and its sampled flag decides, under the default parent-based sampler); a malformed
one is ignored and a new trace starts. The span is named `{method} {route template}` (just the
method when no route matched), as the HTTP conventions ask, so never after a concrete path.
Attributes: `http.request.method` (`_OTHER` for a method outside the standard ones),
`url.scheme`, `http.route`, `http.response.status_code`; a 5xx marks it as an error. No header
value the client sent, no query, no client address, no user.
"""

from __future__ import annotations

from opentelemetry.trace import Tracer
from starlette.types import Scope

from services.common.tracing import ServerSpan, start_server_span
from services.gateway.observability import UNMATCHED_ROUTE, method_label

_TRACEPARENT = b"traceparent"
_TRACESTATE = b"tracestate"


def _method(scope: Scope) -> str:
    return method_label(scope["method"])


def start_request_span(tracer: Tracer, scope: Scope) -> ServerSpan:
    """Start the request's span under the client's trace context and make it current."""
    traceparent = tracestate = None
    for name, value in scope["headers"]:
        if name == _TRACEPARENT and traceparent is None:
            traceparent = bytes(value).decode("latin-1")
        elif name == _TRACESTATE and tracestate is None:
            tracestate = bytes(value).decode("latin-1")
    method = _method(scope)
    return start_server_span(
        tracer,
        method,
        {"http.request.method": method, "url.scheme": scope.get("scheme", "http")},
        traceparent=traceparent,
        tracestate=tracestate,
    )


def end_request_span(span: ServerSpan, scope: Scope, route: str, status: int) -> None:
    """Name the span after the route that served the request, record the status, end it."""
    method = _method(scope)
    if route == UNMATCHED_ROUTE:
        span.end({"http.response.status_code": status}, failed=status >= 500, name=method)
        return
    span.end(
        {"http.route": route, "http.response.status_code": status},
        failed=status >= 500,
        name=f"{method} {route}",
    )
