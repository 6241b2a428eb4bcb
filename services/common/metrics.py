"""Prometheus metrics of a gRPC server, and the HTTP endpoint that exports them.

`RpcMetrics` is what the one server interceptor (`grpc_handlers.py`) records for every RPC it
wraps, once: requests by method and gRPC code, latency by method, calls in flight by method.
Its metrics are named `aicreds_<service>_grpc_...`, in the registry the service passes (one per
server, as the gateway keeps one per application), so two servers in one process (tests) keep
apart. The `method` label is the full gRPC method name of a method the server registered
(`/aicreds.vault.v1.CredentialService/Resolve`): the interceptor wraps only those, so the label
set is the server's fixed list of methods. Health checking and reflection are not counted.

`start_metrics_endpoint` serves a registry as Prometheus text (`GET /metrics`) on the address the
operator chose (`<SERVICE>_METRICS_LISTEN`); nothing listens otherwise. It is prometheus-client's
own threaded HTTP server: a scrape never runs on the event loop that serves the RPCs.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from services.common.settings import split_listen

#: Seconds: from a fraction of a millisecond (a cached `Authenticate`, a `Resolve` on SQLite) to
#: the ten minutes a streamed model call may last.
RPC_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    300,
    600,
)


class MethodMetrics:
    """The labelled children of one method, looked up once (when its handler is wrapped):
    `labels()` validates and locks on every call."""

    __slots__ = ("_method", "_requests", "_by_code", "in_flight", "latency")

    def __init__(self, metrics: RpcMetrics, method: str) -> None:
        self._method = method
        self._requests = metrics.requests
        self._by_code: dict[grpc.StatusCode, Any] = {}
        self.in_flight = metrics.in_flight.labels(method=method)
        self.latency = metrics.latency.labels(method=method)

    def finished(self, code: grpc.StatusCode, elapsed: float) -> None:
        """Count one finished RPC with its code and observe its latency (seconds)."""
        counter = self._by_code.get(code)
        if counter is None:
            counter = self._requests.labels(method=self._method, code=code.name)
            self._by_code[code] = counter
        counter.inc()
        self.latency.observe(elapsed)


class RpcMetrics:
    """The RPC metrics of one gRPC server (`service`: `vault` or `router`)."""

    def __init__(self, service: str, registry: CollectorRegistry) -> None:
        prefix = f"aicreds_{service}_grpc"
        self.requests = Counter(
            f"{prefix}_requests_total",
            "RPCs finished, by full method name and gRPC status code.",
            ["method", "code"],
            registry=registry,
        )
        self.latency = Histogram(
            f"{prefix}_request_duration_seconds",
            "Time from the start of an RPC to its end (a stream's last message), by method.",
            ["method"],
            registry=registry,
            buckets=RPC_LATENCY_BUCKETS,
        )
        self.in_flight = Gauge(
            f"{prefix}_requests_in_flight",
            "RPCs started and not yet finished, by method.",
            ["method"],
            registry=registry,
        )
        self._by_method: dict[str, MethodMetrics] = {}

    def for_method(self, method: str) -> MethodMetrics:
        """The children of `method` (a method the server registered: a bounded set), made once
        and kept, so that a caller per request (the lookups a stream carries) pays no lookup."""
        observed = self._by_method.get(method)
        if observed is None:
            observed = self._by_method[method] = MethodMetrics(self, method)
        return observed


@dataclass(frozen=True)
class MetricsExport:
    """Where to serve a registry: `listen` is `host:port` (`[v6]:port`; port 0 picks one)."""

    listen: str
    registry: CollectorRegistry


class MetricsEndpoint:
    """A started metrics endpoint (prometheus-client's HTTP server on a thread of its own)."""

    def __init__(self, server: WSGIServer) -> None:
        self._server = server

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    async def close(self) -> None:
        """Stop serving (waits for the server's loop to notice, up to half a second)."""
        await asyncio.to_thread(self._server.shutdown)
        self._server.server_close()


def start_metrics_endpoint(export: MetricsExport) -> MetricsEndpoint:
    """Serve `export.registry` as Prometheus text on `export.listen` (every path answers it;
    `/metrics` is the one to scrape); OSError if the address cannot be bound."""
    host, port = split_listen(export.listen)
    server, _thread = start_http_server(port, host, registry=export.registry)
    return MetricsEndpoint(server)
