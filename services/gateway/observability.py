"""Request ids, the JSON access log and Prometheus metrics of the gateway.

The one ASGI layer (`middleware.py`) uses these for every request: `request_id_for` keeps a
sane client `X-Request-Id` or makes a new one; `services.common.request_context.bind_request_id`
makes it the current one (for the gRPC metadata of `clients.py` and every JSON log line); after
the response `Metrics.record_request` and `log_access` write the metrics and one access-log
line (request id, method, route template, status, latency, user). The route is the template
(`/api/v2/users/me/ai-credentials/{key}`), never the concrete path, so neither logs nor metric
labels carry client-chosen text. Nothing of the request's headers or body is logged.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import Scope

from services.common.request_context import new_request_id

_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._\-]{1,128}")
_REQUEST_ID_HEADER = b"x-request-id"
# Where an endpoint records the authenticated user for the access log.
USER_SCOPE_KEY = "aicreds.user_id"
UNMATCHED_ROUTE = "<unmatched>"

_KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)


def method_label(method: str) -> str:
    """An HTTP method as a metric label or span attribute: the standard ones as they are, any
    other `_OTHER` (the set stays bounded whatever the HTTP parser lets through)."""
    return method if method in _KNOWN_METHODS else "_OTHER"


access_log = logging.getLogger("aicreds.gateway.access")


def request_id_for(scope: Scope) -> str:
    """The client's `X-Request-Id` if it is 1-128 of `[A-Za-z0-9._-]`, else a new id."""
    for name, value in scope["headers"]:
        if name == _REQUEST_ID_HEADER:
            incoming = bytes(value).decode("latin-1")
            if _REQUEST_ID_RE.fullmatch(incoming):
                return incoming
            break
    return new_request_id()


def route_template(scope: Scope) -> str:
    """The template of the route that served the request, or `<unmatched>`."""
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED_ROUTE


def log_access(
    scope: Scope, request_id: str, method: str, route: str, status: int, elapsed: float
) -> None:
    """The request's one access-log line (logger `aicreds.gateway.access`, INFO)."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    fields = {
        "request_id": request_id,
        "method": method,
        "route": route,
        "status": status,
        "ms": round(elapsed * 1000, 3),
        "user_id": scope.get(USER_SCOPE_KEY),
        "client": (scope.get("client") or ("", 0))[0],
    }
    # `makeRecord` + `handle` is what `Logger.info` does, less the stack walk that finds the
    # caller's file and line, which the JSON lines do not show.
    record = access_log.makeRecord(
        access_log.name, logging.INFO, __file__, 0, "request", (), None, extra={"fields": fields}
    )
    access_log.handle(record)


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
        # Which store answers the rate limits (1 for the one in use): `redis` when shared,
        # `local` without GATEWAY_REDIS_URL or while Redis is down (limit_fallback.py).
        self.rate_limit_backend = Gauge(
            "aicreds_gateway_rate_limit_backend",
            "The store answering rate-limit checks now (1) and the other (0): redis or local.",
            ["backend"],
            registry=self.registry,
        )
        self.rate_limit_fallbacks = Counter(
            "aicreds_gateway_rate_limit_fallbacks_total",
            "Rate-limit checks answered by this gateway's own buckets because Redis was down.",
            registry=self.registry,
        )
        # The labelled children of `requests` and `latency`, looked up once per label set:
        # `labels()` validates and locks on every call. The label sets are bounded (parsed HTTP
        # methods, route templates, statuses), and the registry keeps the same children anyway.
        self._request_counters: dict[tuple[str, str, int], Any] = {}
        self._latency_histograms: dict[tuple[str, str], Any] = {}

    def record_request(self, method: str, route: str, status: int, elapsed: float) -> None:
        """Count one answered request and observe its latency (seconds)."""
        method = method_label(method)
        counter = self._request_counters.get((method, route, status))
        if counter is None:
            counter = self.requests.labels(method=method, route=route, status=str(status))
            self._request_counters[(method, route, status)] = counter
        counter.inc()
        histogram = self._latency_histograms.get((method, route))
        if histogram is None:
            histogram = self.latency.labels(method=method, route=route)
            self._latency_histograms[(method, route)] = histogram
        histogram.observe(elapsed)


class RevocationFeedMetrics:
    """The revocation feed's metrics (`revocation_feed.py`), in the application's registry;
    registered only when the gateway has a feed (`GATEWAY_REDIS_URL`)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.connected = Gauge(
            "aicreds_gateway_revocation_feed_connected",
            "1 while this gateway hears the other replicas' revocations (subscribed in Redis);"
            " 0 while it cannot, and a revoked credential may work here for the cache TTL.",
            registry=registry,
        )
        self.published = Counter(
            "aicreds_gateway_revocations_published_total",
            "Revocations this gateway told the other replicas of, by outcome (ok or failed).",
            ["outcome"],
            registry=registry,
        )
        self.received = Counter(
            "aicreds_gateway_revocations_received_total",
            "Messages received on the revocation feed, by outcome (applied, or why malformed).",
            ["outcome"],
            registry=registry,
        )
        self.cache_clears = Counter(
            "aicreds_gateway_auth_cache_clears_total",
            "Whole authentication caches dropped on (re)subscribing to the revocation feed,"
            " since revocations may have been missed while it was down.",
            registry=registry,
        )
