"""Tracing settings from the standard OTEL_* variables, W3C trace context in and out, and the
trace id on log lines (`services.common.tracing`, `services.common.tracing_setup`). The trace
across the real stack is tests/gateway/test_traces.py's."""

from __future__ import annotations

import json
import logging

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from services.common import tracing
from services.common.logging import JsonFormatter
from services.common.tracing_setup import TracingSettings, start_tracing


def test_no_endpoint_means_no_tracing() -> None:
    settings = TracingSettings.from_env({}, "aicreds-router")
    assert settings == TracingSettings(endpoint=None, service_name="aicreds-router")
    off = start_tracing(settings)
    assert off.tracer is None
    assert off.force_flush()


def test_the_endpoint_gets_the_traces_path_and_the_traces_endpoint_is_used_as_it_is() -> None:
    base = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"}
    assert TracingSettings.from_env(base, "x").endpoint == "http://collector:4318/v1/traces"
    both = {**base, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://traces.example/in"}
    assert TracingSettings.from_env(both, "x").endpoint == "https://traces.example/in"


def test_the_service_name_and_the_switches_off() -> None:
    base = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
    named = TracingSettings.from_env({**base, "OTEL_SERVICE_NAME": "edge-eu"}, "aicreds-gateway")
    assert named.service_name == "edge-eu"
    assert TracingSettings.from_env({**base, "OTEL_SDK_DISABLED": "true"}, "x").endpoint is None
    assert TracingSettings.from_env({**base, "OTEL_TRACES_EXPORTER": "none"}, "x").endpoint is None


@pytest.mark.parametrize(
    "environ",
    [
        {"OTEL_TRACES_EXPORTER": "zipkin"},
        {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
        {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"},
        {"OTEL_SDK_DISABLED": "maybe"},
    ],
)
def test_settings_that_cannot_work_are_refused(environ: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="OTEL_"):
        TracingSettings.from_env(environ, "x")


def test_trace_context_goes_out_as_the_w3c_propagator_writes_it() -> None:
    assert tracing.trace_metadata() == ()
    tracer = TracerProvider().get_tracer("test")
    remote = tracing.extract_context(
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "vendor=opaque"
    )
    with tracer.start_as_current_span("call", context=remote) as span:
        carrier: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(carrier)
        assert dict(tracing.trace_metadata()) == carrier
        assert carrier["tracestate"] == "vendor=opaque"
        assert span.get_span_context().trace_id == 0x0AF7651916CD43DD8448EB211C80319C


def test_a_malformed_traceparent_names_no_parent() -> None:
    for header in ("00-not-a-trace-01", "00-" + "0" * 32 + "-" + "1" * 16 + "-01", ""):
        parent = tracing.extract_context(header, None)
        assert not trace.get_current_span(parent).get_span_context().is_valid


def test_log_lines_carry_the_current_trace_and_span_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracing, "active", True)
    formatter = JsonFormatter("test")
    record = logging.LogRecord("aicreds.test", logging.INFO, __file__, 1, "hello", (), None)
    assert "trace_id" not in json.loads(formatter.format(record))
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("work") as span:
        line = json.loads(formatter.format(record))
    context = span.get_span_context()
    assert line["trace_id"] == f"{context.trace_id:032x}"
    assert line["span_id"] == f"{context.span_id:016x}"


def test_with_tracing_off_log_lines_do_not_look_for_a_span(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tracing, "active", False)
    tracer = TracerProvider().get_tracer("test")
    record = logging.LogRecord("aicreds.test", logging.INFO, __file__, 1, "hello", (), None)
    with tracer.start_as_current_span("someone else's span"):
        assert "trace_id" not in json.loads(JsonFormatter("test").format(record))
