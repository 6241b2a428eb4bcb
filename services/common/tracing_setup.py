"""Turning OpenTelemetry tracing on for one service: settings, SDK provider, OTLP exporter.

Tracing is on when the standard `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as it is) or
`OTEL_EXPORTER_OTLP_ENDPOINT` (+ `/v1/traces`) is set, unless `OTEL_SDK_DISABLED=true` or
`OTEL_TRACES_EXPORTER=none`. Then the service gets a tracer provider of its own (resource
`service.name` from `OTEL_SERVICE_NAME`, else `aicreds-<service>`) whose `BatchSpanProcessor`
sends spans from a background thread over OTLP/HTTP (protobuf); the exporter reads its other
standard variables itself (`OTEL_EXPORTER_OTLP_HEADERS`, `..._TIMEOUT`, `..._CERTIFICATE`,
`..._COMPRESSION`), as do the sampler (`OTEL_TRACES_SAMPLER`) and the processor
(`OTEL_BSP_*`). Otherwise there is no provider at all and the service's tracer is None.

No global tracer provider is set: each service's composition root hands its tracer to the code
that makes spans, so the three services of one test process each report as themselves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Tracer

from services.common import tracing
from services.common.settings import env_bool, env_optional, env_str

_TRACES_PATH = "/v1/traces"
_PROTOCOL = "http/protobuf"


@dataclass(frozen=True)
class TracingSettings:
    """Where a service sends its spans; `endpoint` None: tracing off."""

    endpoint: str | None = None
    service_name: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str], default_service_name: str) -> TracingSettings:
        """Read the standard OTEL_* variables (see the module doc); ValueError names a bad one."""
        service_name = env_str(environ, "OTEL_SERVICE_NAME", default_service_name)
        disabled = env_bool(environ, "OTEL_SDK_DISABLED", False)
        exporter = env_str(environ, "OTEL_TRACES_EXPORTER", "otlp").strip().lower()
        if exporter not in ("otlp", "none"):
            raise ValueError("OTEL_TRACES_EXPORTER must be otlp or none")
        for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
            protocol = env_optional(environ, name)
            if protocol is not None and protocol.strip().lower() != _PROTOCOL:
                raise ValueError(f"{name} must be {_PROTOCOL}, the only OTLP protocol sent")
        endpoint = env_optional(environ, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        if endpoint is None:
            base = env_optional(environ, "OTEL_EXPORTER_OTLP_ENDPOINT")
            endpoint = base.rstrip("/") + _TRACES_PATH if base else None
        if disabled or exporter == "none":
            endpoint = None
        return cls(endpoint=endpoint, service_name=service_name)


class Tracing:
    """One service's tracer (None when tracing is off) and the provider behind it."""

    def __init__(self, provider: TracerProvider | None) -> None:
        self._provider = provider
        self.tracer: Tracer | None = (
            provider.get_tracer("aicreds") if provider is not None else None
        )

    def __repr__(self) -> str:
        return f"Tracing(on={self.tracer is not None})"

    def force_flush(self, timeout_ms: int = 10_000) -> bool:
        """Export every ended span now (blocking); True when all were sent in time."""
        return self._provider.force_flush(timeout_ms) if self._provider is not None else True

    async def shutdown(self) -> None:
        """Send what is left and stop the exporter's thread (off the event loop: it blocks)."""
        if self._provider is not None:
            provider, self._provider = self._provider, None
            await asyncio.to_thread(provider.shutdown)


def start_tracing(settings: TracingSettings) -> Tracing:
    """A tracer provider exporting to `settings.endpoint`, or `Tracing(None)` when it is unset."""
    if settings.endpoint is None:
        return Tracing(None)
    provider = TracerProvider(
        resource=Resource.create({SERVICE_NAME: settings.service_name}),
        shutdown_on_exit=False,  # the service's stop shuts it down (`Tracing.shutdown`)
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.endpoint)))
    tracing.mark_active()
    return Tracing(provider)
