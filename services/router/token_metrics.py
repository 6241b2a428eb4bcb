"""The router's Prometheus metrics of token usage (issue 18), after OpenTelemetry's
`gen_ai.client.token.usage`.

- `aicreds_router_tokens_total{provider, model, type}`: a counter of tokens, `type` `input` or
  `output`;
- `aicreds_router_token_usage{type}`: a histogram of tokens per answer, with the buckets
  OpenTelemetry's GenAI conventions recommend (powers of 4 from 1 to 4^13);
- `aicreds_router_usage_reports_dropped_total{reason}`: answers' usage not sent to the vault,
  `reason` `queue_full` (the vault is slower than the calls) or `send_failed` (it refused or
  did not answer in time).

Provider and model names are chosen by users, so the (provider, model) pairs are bounded
(`BoundedLabels`): the first `MAX_PAIRS` pairs seen keep their names, later ones are counted
under provider and model `other`. No label holds a user id, a credential key or value, a token
or a URL.

The metrics live in the `CollectorRegistry` they are given (the router's, where it exports one),
else in a registry of their own (`registry`).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from services.common.bounded_labels import BoundedLabels
from services.router.usage import UsageReport

MAX_PAIRS = 100
"""The most (provider, model) pairs with series of their own."""
TOKEN_BUCKETS = tuple(float(4**n) for n in range(14))
"""OpenTelemetry's recommended buckets of `gen_ai.client.token.usage`: 1, 4, ..., 67108864."""
_OVERFLOW = "other"
# A provider name is at most 64 characters and a model 256: a pair fits 322.
_PAIR_LENGTH = 64 + 1 + 256


class TokenMetrics:
    """The token counter and histogram, and the dropped reports."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.tokens = Counter(
            "aicreds_router_tokens",
            "Tokens the upstreams' answers reported, by provider name, model and type"
            " (input or output).",
            ["provider", "model", "type"],
            registry=self.registry,
        )
        self.token_usage = Histogram(
            "aicreds_router_token_usage",
            "Tokens per answer that reported usage, by type (input or output).",
            ["type"],
            buckets=TOKEN_BUCKETS,
            registry=self.registry,
        )
        self.dropped = Counter(
            "aicreds_router_usage_reports_dropped",
            "Answers' usage that never reached the vault, by reason (queue_full, send_failed).",
            ["reason"],
            registry=self.registry,
        )
        self._pairs = BoundedLabels(MAX_PAIRS, max_length=_PAIR_LENGTH, overflow=_OVERFLOW)

    def __repr__(self) -> str:
        return f"TokenMetrics({self._pairs!r})"

    def observe(self, report: UsageReport) -> None:
        """Count one answer's tokens."""
        provider, model = report.provider, report.model
        if self._pairs(f"{provider}\x00{model}") == _OVERFLOW:
            provider = model = _OVERFLOW
        usage = report.usage
        for kind, count in (("input", usage.input_tokens), ("output", usage.output_tokens)):
            self.tokens.labels(provider, model, kind).inc(count)
            self.token_usage.labels(kind).observe(count)

    def drop(self, reason: str, reports: int = 1) -> None:
        """Count reports that will not reach the vault."""
        self.dropped.labels(reason).inc(reports)
