"""The router's Prometheus metrics of token usage (issue 18), after OpenTelemetry's
`gen_ai.client.token.usage`, in the router's registry (`services.router.metrics`; only when the
router exports metrics, `ROUTER_METRICS_LISTEN`):

- `aicreds_router_tokens_total{provider, model, type}`: a counter of tokens, `type` `input` or
  `output`;
- `aicreds_router_token_usage{type}`: a histogram of tokens per answer, with the buckets
  OpenTelemetry's GenAI conventions recommend (powers of 4 from 1 to 4^13);
- `aicreds_router_usage_reports_dropped_total{reason}`: answers' usage not sent to the vault,
  `reason` `queue_full` (the vault slower than the calls) or `send_failed` (it refused or did
  not answer in time).

Labels, bounded and safe: `provider` is the router's provider label (`provider_labels`, shared
with the upstream metrics, so both name the same providers); `model` is the model the call asked
for, which a client may spell freely after `provider/`: it becomes a label value only if it reads
like a name (`bounded_labels.is_label_safe`, at most 64 characters) and is one of the first
`MAX_MODELS` such models seen; and at most `MAX_PAIRS` (provider, model) pairs get series of
their own, later ones being counted under provider and model `other`. No label holds a user id,
a credential key or value, a token or a URL.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram

from services.common.bounded_labels import OVERFLOW, BoundedLabels
from services.router.usage import UsageReport

MAX_MODELS = 100
"""The most distinct models with label values of their own."""
MAX_PAIRS = 100
"""The most (provider, model) pairs with series of their own."""
TOKEN_BUCKETS = tuple(float(4**n) for n in range(14))
"""OpenTelemetry's recommended buckets of `gen_ai.client.token.usage`: 1, 4, ..., 67108864."""


class TokenMetrics:
    """The token counter and histogram, and the dropped reports."""

    def __init__(self, registry: CollectorRegistry, provider_label: Callable[[str], str]) -> None:
        self.registry = registry
        self.tokens = Counter(
            "aicreds_router_tokens",
            "Tokens the upstreams' answers reported, by provider name, model (both bounded,"
            " else `other`) and type (input or output).",
            ["provider", "model", "type"],
            registry=registry,
        )
        self.token_usage = Histogram(
            "aicreds_router_token_usage",
            "Tokens per answer that reported usage, by type (input or output).",
            ["type"],
            buckets=TOKEN_BUCKETS,
            registry=registry,
        )
        self.dropped = Counter(
            "aicreds_router_usage_reports_dropped",
            "Answers' usage that never reached the vault, by reason (queue_full, send_failed).",
            ["reason"],
            registry=registry,
        )
        self._provider_label = provider_label
        self._model_label = BoundedLabels(MAX_MODELS)
        self._pairs = BoundedLabels(MAX_PAIRS, max_length=256, accept=None)

    def __repr__(self) -> str:
        return f"TokenMetrics(models={self._model_label!r}, pairs={self._pairs!r})"

    def observe(self, report: UsageReport) -> None:
        """Count one answer's tokens."""
        provider = self._provider_label(report.provider)
        model = self._model_label(report.model)
        if self._pairs(f"{provider}\x00{model}") == OVERFLOW:
            provider = model = OVERFLOW
        usage = report.usage
        for kind, count in (("input", usage.input_tokens), ("output", usage.output_tokens)):
            self.tokens.labels(provider, model, kind).inc(count)
            self.token_usage.labels(kind).observe(count)

    def drop(self, reason: str, reports: int = 1) -> None:
        """Count reports that will not reach the vault."""
        self.dropped.labels(reason).inc(reports)
