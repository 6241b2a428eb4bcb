"""Latency statistics: percentiles and the summary every scenario reports."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

PERCENTILES = (50.0, 90.0, 99.0)


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100) of already sorted values, linearly interpolated.

    The same definition as numpy's default ("linear"): rank = p/100 * (n - 1).
    """
    if not sorted_values:
        raise ValueError("percentile of no values")
    if not 0.0 <= p <= 100.0:
        raise ValueError("p must be within 0..100")
    rank = p / 100.0 * (len(sorted_values) - 1)
    low = math.floor(rank)
    high = math.ceil(rank)
    if low == high:
        return float(sorted_values[low])
    weight = rank - low
    return float(sorted_values[low]) * (1.0 - weight) + float(sorted_values[high]) * weight


@dataclass(frozen=True)
class LatencySummary:
    """Latency of one run in milliseconds."""

    p50: float
    p90: float
    p99: float
    mean: float
    max: float

    def as_dict(self) -> dict[str, float]:
        return {
            "p50": round(self.p50, 4),
            "p90": round(self.p90, 4),
            "p99": round(self.p99, 4),
            "mean": round(self.mean, 4),
            "max": round(self.max, 4),
        }


def summarize_ms(samples_ms: Sequence[float]) -> LatencySummary | None:
    """Percentiles, mean and max of latency samples in ms; None when there are none."""
    if not samples_ms:
        return None
    ordered = sorted(samples_ms)
    return LatencySummary(
        p50=percentile(ordered, 50),
        p90=percentile(ordered, 90),
        p99=percentile(ordered, 99),
        mean=sum(ordered) / len(ordered),
        max=ordered[-1],
    )


def overhead(
    through: dict[str, float] | None, direct: dict[str, float] | None
) -> dict[str, float] | None:
    """Through minus direct, per percentile (ms); None when either side is missing."""
    if not through or not direct:
        return None
    return {
        key: round(through[key] - direct[key], 4)
        for key in ("p50", "p90", "p99")
        if key in through and key in direct
    }


def rss_growth_pct(totals_mib: Sequence[float], window: float = 0.1) -> tuple[float, float, float]:
    """(start, end, growth %) of an RSS timeline: the medians of its first and last `window`.

    Medians of a window, not single samples, so that one garbage-collection spike at either
    end does not decide the figure.
    """
    if len(totals_mib) < 2:
        raise ValueError("rss_growth_pct needs at least two samples")
    size = max(1, int(len(totals_mib) * window))
    head = sorted(totals_mib[:size])
    tail = sorted(totals_mib[-size:])
    start = percentile(head, 50)
    end = percentile(tail, 50)
    growth = (end - start) / start * 100.0 if start > 0 else 0.0
    return start, end, growth
