"""Request ids, the JSON access log and Prometheus metrics of the gateway.

`ObservabilityMiddleware` wraps the whole application: it assigns the request id (a sane
client `X-Request-Id` is kept, otherwise a new one), echoes it in the response, and after the
response writes one access-log line (request id, method, route template, status, latency,
user) and updates the metrics. The route is the template (`/api/v2/users/me/ai-credentials/{key}`)
never the concrete path, so neither logs nor metric labels carry client-chosen text. Nothing
of the request's headers or body is logged.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from contextvars import ContextVar
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_request_id: ContextVar[str] = ContextVar("aicreds_gateway_request_id", default="")
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._\-]{1,128}$")
# Where an endpoint records the authenticated user for the access log.
USER_SCOPE_KEY = "aicreds.user_id"
UNMATCHED_ROUTE = "<unmatched>"

access_log = logging.getLogger("aicreds.gateway.access")


def current_request_id() -> str:
    """The id of the request being handled ("" outside a request)."""
    return _request_id.get()


class Metrics:
    """The gateway's Prometheus metrics, in a registry of their own (one per application)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "aicreds_gateway_http_requests_total",
            "HTTP requests handled, by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "aicreds_gateway_http_request_duration_seconds",
            "Time to the end of the response, by method and route template.",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.auth_failures = Counter(
            "aicreds_gateway_auth_failures_total",
            "Requests refused by authentication or scope, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "aicreds_gateway_rate_limited_total",
            "Requests refused by a rate limit, by limit (token or address).",
            ["limit"],
            registry=self.registry,
        )


class ObservabilityMiddleware:
    """Pure ASGI middleware: request id, access log, metrics (streaming responses unharmed)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        incoming = _header(scope, b"x-request-id")
        request_id = (
            incoming if incoming and _REQUEST_ID_RE.fullmatch(incoming) else uuid.uuid4().hex
        )
        token = _request_id.set(request_id)
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode("ascii")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - start
            route = _route_template(scope)
            method = str(scope.get("method", ""))
            self.metrics.requests.labels(method=method, route=route, status=str(status)).inc()
            self.metrics.latency.labels(method=method, route=route).observe(elapsed)
            access_log.info(
                "request",
                extra={
                    "fields": {
                        "request_id": request_id,
                        "method": method,
                        "route": route,
                        "status": status,
                        "ms": round(elapsed * 1000, 3),
                        "user_id": scope.get(USER_SCOPE_KEY),
                        "client": (scope.get("client") or ("", 0))[0],
                    }
                },
            )
            _request_id.reset(token)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _route_template(scope: Scope) -> str:
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED_ROUTE
