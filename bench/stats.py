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


# --- wrk 4.1's coordinated-omission correction -------------------------------------------------
#
# wrk records each request's latency in whole microseconds in a histogram. After the run it
# computes `interval = runtime_us / (completed / connections)` (integer divisions: the mean time
# between two requests of one connection) and calls `stats_correct(latency, interval)`: for each
# recorded latency n >= 2 * interval it adds the same count at n - interval, n - 2 * interval, ...
# while that is still > interval (the requests a connection "would have sent" while it waited).
# Its percentile is the first value whose cumulative count reaches round(p/100 * count + 0.5).
# (wrk scans from the smallest recorded latency; a synthetic sample is > interval, which is at
# least the smallest latency of a closed loop, so scanning every value is the same.) The
# functions below do exactly that, so the same per-request times give both figures: as
# recorded, and as wrk would report them.


def wrk_interval_us(runtime_us: int, completed: int, connections: int) -> int | None:
    """wrk's expected interval between a connection's requests; None when wrk skips the
    correction (fewer completed requests than connections)."""
    per_connection = completed // max(1, connections)
    if per_connection <= 0:
        return None
    return runtime_us // per_connection


def wrk_corrected_histogram(samples_us: Sequence[int], interval_us: int | None) -> dict[int, int]:
    """{latency µs: count} after wrk's correction (unchanged when `interval_us` is None)."""
    histogram: dict[int, int] = {}
    for value in samples_us:
        histogram[value] = histogram.get(value, 0) + 1
    if not interval_us or interval_us <= 0:
        return histogram
    for value, count in sorted(histogram.items()):  # a copy: the originals, not the synthetics
        synthetic = value - interval_us
        if value < 2 * interval_us:
            continue
        while synthetic > interval_us:
            histogram[synthetic] = histogram.get(synthetic, 0) + count
            synthetic -= interval_us
    return histogram


def wrk_percentile(histogram: dict[int, int], p: float) -> int:
    """wrk's `stats_percentile`: the first latency (µs) whose cumulative count reaches
    round(p/100 * count + 0.5)."""
    total_count = sum(histogram.values())
    rank = math.floor(p / 100.0 * total_count + 0.5 + 0.5)  # C's round() of a positive value
    total = 0
    for value in sorted(histogram):
        total += histogram[value]
        if total >= rank:
            return value
    return 0


def wrk_corrected_summary(
    samples_ns: Sequence[int], runtime_ns: int, completed: int, connections: int
) -> LatencySummary | None:
    """Percentiles (ms) of per-request times as wrk 4.1 would report them, correction included.

    `completed` counts every answer of the run (wrk's `complete`, errors included), which is
    what sets the expected interval.
    """
    if not samples_ns:
        return None
    samples_us = [int(ns) // 1000 for ns in samples_ns]
    interval = wrk_interval_us(runtime_ns // 1000, completed, connections)
    histogram = wrk_corrected_histogram(samples_us, interval)
    count = sum(histogram.values())
    mean_us = sum(value * n for value, n in histogram.items()) / count
    return LatencySummary(
        p50=wrk_percentile(histogram, 50) / 1000.0,
        p90=wrk_percentile(histogram, 90) / 1000.0,
        p99=wrk_percentile(histogram, 99) / 1000.0,
        mean=mean_us / 1000.0,
        max=max(samples_us) / 1000.0,
    )
