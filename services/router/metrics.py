"""The router's Prometheus metrics of upstream calls (its RPCs are counted by the interceptor,
`services.common.metrics.RpcMetrics`).

Labels, and why they stay few and safe:

- `provider`: the provider's name (`provider_labels`). Names are chosen by users, so they are
  bounded here: a name becomes a label value only if it is short (at most 32 of `a-z 0-9 _ -`)
  and has no long run of mixed letters and digits (what a pasted key looks like), and only the
  first `MAX_PROVIDER_LABELS` distinct names this process sees; any other name is `other`. The
  name is what the router's `upstream call` log line already shows; it is never a user id, a
  credential key or value, a URL or a path.
- `status_class`: `1xx` to `5xx` from the upstream's answer, or `error` when no answer came
  (refused by the egress policy, unreachable, timed out, cancelled).

No URL, host, path, user or header is a label: each is unbounded or private. The token
metrics (`token_metrics.py`, issue 18) add a `model` label, bounded and filtered the same way.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.common.bounded_labels import BoundedLabels, is_label_safe

#: Distinct provider names one router process labels before every new one is `other`.
MAX_PROVIDER_LABELS = 100
OTHER_PROVIDER = "other"
NO_ANSWER = "error"

_LABEL_NAME = re.compile(r"[a-z0-9_-]{1,32}")

#: Seconds, from a local upstream's milliseconds to a reasoning model's minutes.
UPSTREAM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


def status_class(status: int | None) -> str:
    """`2xx` for 200-299 and so on; `error` when there was no answer."""
    if status is None or not 100 <= status <= 599:
        return NO_ANSWER
    return f"{status // 100}xx"


def _is_provider_name(name: str) -> bool:
    """A provider name as a label may read: at most 32 of `a-z 0-9 _ -`, and not key-like."""
    return bool(_LABEL_NAME.fullmatch(name)) and is_label_safe(name)


def provider_labels(limit: int = MAX_PROVIDER_LABELS) -> BoundedLabels:
    """Provider names as label values: the first `limit` acceptable names, then `other`
    (`services.common.bounded_labels`, the one home of that rule)."""
    return BoundedLabels(limit, max_length=32, overflow=OTHER_PROVIDER, accept=_is_provider_name)


class RouterMetrics:
    """Upstream calls, the connection pool and the egress policy's refusals."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.provider_label = provider_labels()
        self.upstream_requests = Counter(
            "aicreds_router_upstream_requests_total",
            "Requests sent upstream, by provider name (bounded, else `other`) and status class"
            " (`error`: no answer).",
            ["provider", "status_class"],
            registry=registry,
        )
        self.upstream_latency = Histogram(
            "aicreds_router_upstream_request_duration_seconds",
            "Time from sending a request upstream to the end of its answer's body, by provider.",
            ["provider"],
            registry=registry,
            buckets=UPSTREAM_BUCKETS,
        )
        self.upstream_first_byte = Histogram(
            "aicreds_router_upstream_time_to_first_byte_seconds",
            "Time from sending a request upstream (connection included) to its answer's head,"
            " by provider.",
            ["provider"],
            registry=registry,
            buckets=UPSTREAM_BUCKETS,
        )
        self.egress_refusals = Counter(
            "aicreds_router_egress_refusals_total",
            "Upstream requests the egress policy (ROUTER_EGRESS_ALLOW) refused before anything"
            " was sent; CheckUpstream's answers are not counted.",
            registry=registry,
        )
        self._connections_in_use = Gauge(
            "aicreds_router_upstream_connections_in_use",
            "Upstream connections carrying a request now, or being opened for one.",
            registry=registry,
        )
        self._connections_idle = Gauge(
            "aicreds_router_upstream_connections_idle",
            "Upstream connections kept open, idle, for reuse.",
            registry=registry,
        )
        # Labelled children, looked up once (`labels()` validates and locks on every call):
        # the counter by (provider, status class), the two histograms by provider.
        self._children: dict[tuple[str, str], Any] = {}
        self._timings: dict[str, tuple[Any, Any]] = {}

    def watch_pool(self, in_use: Callable[[], int], idle: Callable[[], int]) -> None:
        """Read the pool's counts at each scrape."""
        self._connections_in_use.set_function(in_use)
        self._connections_idle.set_function(idle)

    def upstream_call(
        self,
        provider_name: str,
        status: int | None,
        first_byte: float | None,
        elapsed: float,
        *,
        egress_refused: bool = False,
    ) -> None:
        """Record one upstream request: its answer's status (None: no answer), seconds to its
        head (None: none came) and in all."""
        provider = self.provider_label(provider_name)
        key = (provider, status_class(status))
        counter = self._children.get(key)
        if counter is None:
            counter = self.upstream_requests.labels(provider=key[0], status_class=key[1])
            self._children[key] = counter
        counter.inc()
        timings = self._timings.get(provider)
        if timings is None:
            timings = self._timings[provider] = (
                self.upstream_latency.labels(provider=provider),
                self.upstream_first_byte.labels(provider=provider),
            )
        timings[0].observe(elapsed)
        if first_byte is not None:
            timings[1].observe(first_byte)
        if egress_refused:
            self.egress_refusals.inc()
