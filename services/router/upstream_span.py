"""The CLIENT span of one upstream request (`Router.stream`, when tracing is on).

It spans the whole exchange: from sending the request to the last body byte relayed (or the
failure). Named after the HTTP method (`POST`), as the HTTP conventions ask when no URL template
is known. Attributes, following the HTTP and GenAI conventions:

    http.request.method, url.scheme, server.address (the host only), server.port
    http.response.status_code             when an answer came
    error.type                            the error's reason (`upstream_timeout`, ...) or the
                                          status code for an answer of 400 or more
    gen_ai.provider.name                  `openai` or `anthropic` (the provider's kind; not set
                                          for a custom one)
    gen_ai.request.model                  the model sent upstream, when the call named one
    aicreds.provider.name                 the user's name of the provider (`openai`, `work`)
    gen_ai.usage.input_tokens/output_tokens   set by `record_usage`, when the answer's `usage`
                                          is known

Never the path or query, a header, a credential or its key name.
"""

from __future__ import annotations

from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.util.types import AttributeValue

from services.router.transport import UpstreamTarget

_GEN_AI_PROVIDERS = frozenset({"openai", "anthropic"})


def start_upstream_span(
    tracer: Tracer,
    method: str,
    target: UpstreamTarget,
    *,
    provider_name: str,
    provider_kind: str,
    model: str,
) -> Span:
    """Start the span as a child of the current one (the RPC's); it is not made current."""
    attributes: dict[str, AttributeValue] = {
        "http.request.method": method,
        "url.scheme": target.scheme,
        "server.address": target.host,
        "server.port": target.port,
        "aicreds.provider.name": provider_name,
    }
    if provider_kind in _GEN_AI_PROVIDERS:
        attributes["gen_ai.provider.name"] = provider_kind
    if model:
        attributes["gen_ai.request.model"] = model
    return tracer.start_span(method, kind=SpanKind.CLIENT, attributes=attributes)


def record_usage(span: Span, input_tokens: int | None, output_tokens: int | None) -> None:
    """The answer's token counts (`gen_ai.usage.*`), for the code that reads `usage` (issue 18
    item 2) to call before the span ends."""
    if input_tokens is not None:
        span.set_attribute("gen_ai.usage.input_tokens", input_tokens)
    if output_tokens is not None:
        span.set_attribute("gen_ai.usage.output_tokens", output_tokens)


def end_upstream_span(span: Span, status: int | None, error: str | None) -> None:
    """Record what came back (`status`, None when nothing did) or the failure, and end."""
    if status is not None:
        span.set_attribute("http.response.status_code", status)
    if error is None and status is not None and status >= 400:
        error = str(status)
    if error is not None:
        span.set_attribute("error.type", error)
        span.set_status(Status(StatusCode.ERROR))
    span.end()
