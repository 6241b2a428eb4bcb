"""OpenTelemetry traces through the real stack (issue 18): one trace per model call, spanning the
gateway, the router (with the upstream request as a CLIENT span) and the vault's `Resolve`,
exported over OTLP/HTTP to an in-test receiver; the client's `traceparent` honoured; no
credential value, token or key name anywhere in what is exported; log lines carry the trace id.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from services.common import tracing
from services.common.logging import JsonFormatter
from tests.support.background import BackgroundLoop
from tests.support.fake_upstream import FakeUpstream
from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.support.stack import USER, LlmStack, llm_stack

SERVER, CLIENT = 2, 3  # opentelemetry.proto.trace.v1.Span.SpanKind
GATEWAY_SPAN = "POST /v1/chat/completions"
INVOKE_BUFFERED = "aicreds.router.v1.RouterService/InvokeBuffered"
INVOKE = "aicreds.router.v1.RouterService/Invoke"
RESOLVE = "aicreds.vault.v1.CredentialService/Resolve"
#: A header the client sends besides its token; its value must not be exported.
CLIENT_NOTE = "client-note-" + secrets.token_hex(8)


class LogLines(logging.Handler):
    """Every record as the services' JSON formatter writes it, formatted when it is emitted
    (in the context of the code that logs it, as a service's stderr handler does)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(JsonFormatter("test"))
        self.lines: list[dict[str, object]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@dataclass
class TracedRun:
    stack: LlmStack
    receiver: OtlpReceiver
    client_trace: str
    client_span: str
    stream_trace: str
    logs: LogLines
    metrics_text: str


def _traceparent(trace_id: str, span_id: str) -> str:
    return f"00-{trace_id}-{span_id}-01"


async def _calls(stack: LlmStack, client_trace: str, client_span: str, stream_trace: str) -> str:
    """A buffered and a streamed model call, each with the client's own `traceparent`, and a
    buffered one with a malformed `traceparent`; returns the gateway's /metrics."""
    headers = {"Authorization": f"Bearer {stack.tokens.invoke}", "X-Client-Note": CLIENT_NOTE}
    chat = {"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as client:
        buffered = await client.post(
            "/v1/chat/completions",
            json=chat,
            headers={
                **headers,
                "traceparent": _traceparent(client_trace, client_span),
                "tracestate": "client=1",
            },
        )
        assert buffered.status_code == 200, buffered.text
        streamed = await client.post(
            "/v1/chat/completions",
            json={**chat, "stream": True},
            headers={**headers, "traceparent": _traceparent(stream_trace, secrets.token_hex(8))},
        )
        assert streamed.status_code == 200, streamed.text
        assert "[DONE]" in streamed.text
        unparented = await client.post(
            "/v1/chat/completions",
            json=chat,
            headers={**headers, "traceparent": "00-not-a-trace-01"},
        )
        assert unparented.status_code == 200, unparented.text
        metrics = await client.get("/metrics")
        assert metrics.status_code == 200
        return metrics.text


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TracedRun]:
    """The calls of `_calls` through a traced stack, which is then stopped (so that every span
    is exported), with every log line of the run as the services write them."""
    logs = LogLines()
    root = logging.getLogger()
    level = root.level
    root.addHandler(logs)
    root.setLevel(logging.INFO)
    client_trace, client_span = secrets.token_hex(16), secrets.token_hex(8)
    stream_trace = secrets.token_hex(16)
    try:
        with (
            pytest.MonkeyPatch.context() as patch,  # tracing.active: back to off afterwards
            FakeUpstream() as upstream,
            OtlpReceiver() as receiver,
        ):
            patch.setattr(tracing, "active", tracing.active)
            servers = BackgroundLoop()
            try:
                stack = servers.enter(
                    llm_stack(
                        tmp_path_factory.mktemp("traces"), upstream, otlp_endpoint=receiver.endpoint
                    )
                )
                metrics_text = servers.run(_calls(stack, client_trace, client_span, stream_trace))
            finally:
                servers.close()  # stops the stack: each service exports the spans it holds
            yield TracedRun(
                stack, receiver, client_trace, client_span, stream_trace, logs, metrics_text
            )
    finally:
        root.removeHandler(logs)
        root.setLevel(level)


def _one(spans: list[ReceivedSpan], name: str, trace_id: str) -> ReceivedSpan:
    found = [s for s in spans if s.name == name and s.trace_id == trace_id]
    assert len(found) == 1, f"{name} in trace {trace_id}: {[s.name for s in spans]}"
    return found[0]


def test_a_model_call_is_one_trace_across_gateway_router_and_vault(
    traced: TracedRun,
) -> None:
    spans = traced.receiver.spans()
    trace_id = traced.client_trace

    gateway = _one(spans, GATEWAY_SPAN, trace_id)
    assert (gateway.service, gateway.kind) == ("aicreds-gateway", SERVER)
    assert gateway.parent_span_id == traced.client_span  # the client's traceparent, honoured
    assert gateway.span.trace_state == "client=1"
    assert gateway.attributes == {
        "http.request.method": "POST",
        "url.scheme": "http",
        "http.route": "/v1/chat/completions",
        "http.response.status_code": 200,
    }

    router = _one(spans, INVOKE_BUFFERED, trace_id)
    assert (router.service, router.kind) == ("aicreds-router", SERVER)
    assert router.parent_span_id == gateway.span_id
    assert router.attributes["rpc.grpc.status_code"] == 0

    resolve = _one(spans, RESOLVE, trace_id)
    assert (resolve.service, resolve.kind) == ("aicreds-vault", SERVER)
    assert resolve.parent_span_id == router.span_id

    upstream = _one(spans, "POST", trace_id)
    assert (upstream.service, upstream.kind) == ("aicreds-router", CLIENT)
    assert upstream.parent_span_id == router.span_id
    assert upstream.attributes == {
        "http.request.method": "POST",
        "url.scheme": "http",
        "server.address": "127.0.0.1",
        "server.port": upstream.attributes["server.port"],
        "aicreds.provider.name": "openai",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4",
        "http.response.status_code": 200,
        # The answer's `usage` (the fake upstream's 5 and 6), read as it passed (issue 18).
        "gen_ai.usage.input_tokens": 5,
        "gen_ai.usage.output_tokens": 6,
    }
    # One trace: nothing of this call went anywhere else, and the spans it holds are these
    # (and the vault's Authenticate of the gateway's first look at the token, if any).
    in_trace = {s.name for s in spans if s.trace_id == trace_id}
    assert in_trace - {"aicreds.vault.v1.AuthService/Authenticate"} == {
        GATEWAY_SPAN,
        INVOKE_BUFFERED,
        RESOLVE,
        "POST",
    }
    assert {s.span_id for s in spans if s.trace_id == trace_id} >= {
        gateway.span_id,
        router.span_id,
        resolve.span_id,
        upstream.span_id,
    }


def test_a_streamed_call_is_traced_through_the_streaming_rpc(traced: TracedRun) -> None:
    spans = traced.receiver.spans()
    gateway = _one(spans, GATEWAY_SPAN, traced.stream_trace)
    invoke = _one(spans, INVOKE, traced.stream_trace)
    assert invoke.parent_span_id == gateway.span_id
    assert _one(spans, RESOLVE, traced.stream_trace).parent_span_id == invoke.span_id
    upstream = _one(spans, "POST", traced.stream_trace)
    assert upstream.parent_span_id == invoke.span_id
    # The upstream span lasts until the last chunk was relayed, within the RPC's span.
    assert upstream.span.end_time_unix_nano <= invoke.span.end_time_unix_nano
    # An OpenAI stream without `stream_options.include_usage` reports no usage: none on the span.
    assert not any(name.startswith("gen_ai.usage.") for name in upstream.attributes)


def test_a_malformed_client_traceparent_starts_a_new_trace(traced: TracedRun) -> None:
    spans = traced.receiver.spans()
    roots = [s for s in spans if s.name == GATEWAY_SPAN and not s.parent_span_id]
    assert len(roots) == 1
    trace_id = roots[0].trace_id
    assert trace_id not in (traced.client_trace, traced.stream_trace)
    assert {s.name for s in spans if s.trace_id == trace_id} >= {INVOKE_BUFFERED, RESOLVE, "POST"}


def test_nothing_exported_holds_a_secret_a_key_name_or_a_client_header(
    traced: TracedRun,
) -> None:
    stack = traced.stack
    router = stack.services.router
    assert router is not None
    forbidden = [
        *stack.secrets(),  # the upstream keys and the user's API tokens
        "openai_api_key",  # the credential key names the providers reference
        "anthropic_api_key",
        *(stack.vault.token(name) for name in ("gateway", "router")),  # service tokens
        *router.tokens.values(),
        CLIENT_NOTE,
        USER,
    ]
    bodies = traced.receiver.bodies()
    assert bodies
    exported = b"".join(bodies)  # every span, attribute, event and resource, as sent
    for text in forbidden:
        assert text.encode() not in exported, "an exported span holds a secret"
        assert text not in traced.metrics_text, "a metric label holds a secret"
    for span in traced.receiver.spans():
        for value in span.attributes.values():
            assert not any(text in str(value) for text in forbidden)


def test_log_lines_carry_the_trace_id_of_the_call(traced: TracedRun) -> None:
    spans = traced.receiver.spans()
    trace_id = traced.client_trace
    lines = [line for line in traced.logs.lines if line.get("trace_id") == trace_id]
    loggers = {str(line["logger"]) for line in lines}
    # The gateway's access log, the router's upstream line and access log, the vault's.
    assert {"aicreds.gateway.access", "aicreds.router", "aicreds.access"} <= loggers
    rpc_lines = [line for line in lines if line["logger"] == "aicreds.access"]
    assert {line["method"] for line in rpc_lines} >= {f"/{INVOKE_BUFFERED}", f"/{RESOLVE}"}
    span_ids = {s.span_id for s in spans if s.trace_id == trace_id}
    assert all(line["span_id"] in span_ids for line in lines)
    # A line outside any span has no trace id (the stack's start-up lines, say).
    assert any("trace_id" not in line for line in traced.logs.lines)
