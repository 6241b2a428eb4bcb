"""OpenTelemetry traces at run time: W3C trace context in and out, server spans, log ids.

One trace follows a model call: the gateway's HTTP SERVER span (its parent the client's
`traceparent` when it sent a valid one), the router's and the vault's gRPC SERVER spans
(parents from the `traceparent` metadata that every `open_channel` call carries), and the
router's upstream HTTP CLIENT span. The tracer each service uses comes from its composition root
(`services.common.tracing_setup`); it is None when tracing is off, and then no span, no
attribute and no context object is made: each hook costs one `is None` test, and the channel's
and the log formatter's one read of `active`.

This module imports the OpenTelemetry API only, never the SDK (that is `tracing_setup`'s).

What a span may hold is the one rule here: names and attributes are built from route templates,
gRPC method names, HTTP methods, status codes, hosts, provider kinds and names and model names.
Never a credential value or key name, a token, a header value the client sent, a user id, a URL
path with ids or a query.
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry import context, trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"

active = False
"""True once a service of this process traces (`tracing_setup.start_tracing`): only then do
channels send trace context and log lines look for a span."""

_propagator = TraceContextTextMapPropagator()


def mark_active() -> None:
    """Called by `tracing_setup` when it starts a tracer provider."""
    global active
    active = True


def trace_metadata() -> tuple[tuple[str, str], ...]:
    """`traceparent` (and `tracestate`) of the current span for an outgoing call; () when no
    span is current. The W3C format, as `TraceContextTextMapPropagator.inject` writes it."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return ()
    parent = (
        TRACEPARENT,
        f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-"
        f"{int(span_context.trace_flags):02x}",
    )
    state = span_context.trace_state.to_header() if span_context.trace_state else ""
    return (parent, (TRACESTATE, state)) if state else (parent,)


def extract_context(traceparent: str | None, tracestate: str | None) -> Context | None:
    """The remote parent named by W3C trace context headers (validated as the W3C propagator
    does: a malformed `traceparent` starts a new trace); None when there is none."""
    if not traceparent:
        return None
    carrier = {TRACEPARENT: traceparent}
    if tracestate:
        carrier[TRACESTATE] = tracestate
    return _propagator.extract(carrier)


def current_trace_ids() -> tuple[str, str] | None:
    """The current trace id and span id as hex, for a log line; None when no span is current
    (and at once when tracing is off in this process)."""
    if not active:
        return None
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None
    return f"{span_context.trace_id:032x}", f"{span_context.span_id:016x}"


class ServerSpan:
    """A SERVER span, current from `start_server_span` until `end` (call both in one task), or
    until the task ends when the context is not restored."""

    __slots__ = ("span", "_token")

    def __init__(self, span: Span, parent: Context | None, restore_context: bool) -> None:
        self.span = span
        token = context.attach(trace.set_span_in_context(span, parent))
        self._token = token if restore_context else None

    def end(
        self, attributes: Mapping[str, AttributeValue], *, failed: bool, name: str = ""
    ) -> None:
        """Add the outcome's attributes, mark a server-side failure as an error, rename the span
        when its name is known only now (an HTTP route), end it and restore the context."""
        try:
            if name:
                self.span.update_name(name)
            self.span.set_attributes(attributes)
            if failed:
                self.span.set_status(Status(StatusCode.ERROR))
            self.span.end()
        finally:
            if self._token is not None:
                context.detach(self._token)


def start_server_span(
    tracer: Tracer,
    name: str,
    attributes: Mapping[str, AttributeValue],
    *,
    traceparent: str | None,
    tracestate: str | None,
    restore_context: bool = True,
) -> ServerSpan:
    """Start a SERVER span under the caller's trace context (a new trace without one) and make
    it current; `end` makes the previous context current again unless `restore_context` is
    False (for a request that has a task of its own, whose context ends with it)."""
    parent = extract_context(traceparent, tracestate)
    span = tracer.start_span(name, context=parent, kind=SpanKind.SERVER, attributes=attributes)
    return ServerSpan(span, parent, restore_context)
