"""Issue 20's side-by-side table: LiteLLM and aicreds from the same bench, and the targets.

Each row is one figure of the issue: the peer's value, ours, the ratio **aicreds ÷ LiteLLM**
(always that way round, so > 1 means ours is larger: better for throughput, worse for latency
and memory), the issue's target as a bound on that ratio, and whether it is met.

Latency figures are uncorrected (what each request took, recorded by the latency client or the
Python streaming client) unless the row says "as wrk reports it" (wrk 4.1's histogram, corrected
for coordinated omission). Overheads are through the proxy minus straight to the fake upstream,
same percentile, same concurrency, same kind, same bench: `gateway - direct` and
`litellm - direct`; with the disk writer, `gateway_disk - direct_disk` and
`litellm_disk - direct_disk`.

A figure taken from a run with errors (any non-2xx answer, transport error or truncated stream,
in wrk's run or the latency client's) is flagged; a target cannot be met by a run of ours
with errors.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bench.config import DIRECT_DISK, GATEWAY_DISK, PEER, PEER_DISK, PEER_STREAM

OURS = "gateway"
OURS_STREAM = "stream_gateway"
OUR_SERVICES = ("vault", "router", "gateway")
PEER_PROCESS = "litellm"
SOAK_GROWTH_PCT = 5.0


@dataclass(frozen=True)
class Target:
    """A bound on aicreds ÷ LiteLLM: at least (`at_least`) or at most `bound`."""

    bound: float
    at_least: bool
    label: str

    def met(self, ratio: float | None) -> bool | None:
        if ratio is None:
            return None
        return ratio >= self.bound if self.at_least else ratio <= self.bound


@dataclass(frozen=True)
class Figure:
    """One figure of one side: its value and the runs it came from that had errors."""

    value: float | None
    errors: tuple[str, ...] = ()


def _find(runs: Iterable[Mapping[str, Any]], scenario: str, c: int) -> Mapping[str, Any] | None:
    for run in runs:
        if run["scenario"] == scenario and run["concurrency"] == c:
            return run
    return None


def _errors(*runs: Mapping[str, Any] | None) -> tuple[str, ...]:
    return tuple(
        f"{r['scenario']} c={r['concurrency']}: {r['errors']} errors"
        for r in runs
        if r is not None and r.get("errors")
    )


def _pick(run: Mapping[str, Any] | None, field: str, key: str) -> float | None:
    if run is None:
        return None
    values = run.get(field) or {}
    value = values.get(key)
    return None if value is None else float(value)


def throughput(runs: Sequence[Mapping[str, Any]], scenario: str, c: int) -> Figure:
    run = _find(runs, scenario, c)
    return Figure(None if run is None else float(run["rps"]), _errors(run))


def latency(
    runs: Sequence[Mapping[str, Any]], scenario: str, c: int, key: str, field: str
) -> Figure:
    """A percentile (`key`) of one run, from `field` (e.g. `latency_uncorrected_ms`)."""
    run = _find(runs, scenario, c)
    return Figure(_pick(run, field, key), _errors(run))


def overhead(
    runs: Sequence[Mapping[str, Any]],
    through: str,
    direct: str,
    c: int,
    key: str,
    field: str = "latency_uncorrected_ms",
) -> Figure:
    """`through` minus `direct`, same percentile and kind, at `c` (ms)."""
    a, b = _find(runs, through, c), _find(runs, direct, c)
    va, vb = _pick(a, field, key), _pick(b, field, key)
    value = None if va is None or vb is None else round(va - vb, 4)
    return Figure(value, _errors(a, b))


def peak_rss(runs: Sequence[Mapping[str, Any]], names: Sequence[str]) -> Figure:
    """The largest sum over one run of the peak RSS (MiB) of the processes `names`."""
    best: float | None = None
    for run in runs:
        services = run.get("services") or {}
        present = [services[n] for n in names if n in services]
        if len(present) != len(names):
            continue
        total = sum(float(s.get("peak_rss_mib") or 0.0) for s in present)
        best = total if best is None else max(best, total)
    return Figure(best)


def ratio(ours: Figure, peer: Figure) -> float | None:
    """aicreds ÷ LiteLLM; None when either is missing or the peer's is not positive."""
    if ours.value is None or peer.value is None or peer.value <= 0:
        return None
    return ours.value / peer.value


def _row(
    figure: str,
    peer: Figure,
    ours: Figure,
    unit: str,
    target: Target | None,
) -> dict[str, Any]:
    r = ratio(ours, peer)
    met = None if target is None else target.met(r)  # on the unrounded ratio
    if met and ours.errors:
        met = False  # a run with errors cannot meet a target
    return {
        "figure": figure,
        "unit": unit,
        "litellm": peer.value,
        "aicreds": ours.value,
        "ratio": None if r is None else round(r, 4),
        "target": None if target is None else target.label,
        "met": met,
        "errors": list(peer.errors + ours.errors),
    }


def side_by_side(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Issue 20's rows (empty when the peer did not run)."""
    runs: Sequence[Mapping[str, Any]] = results["runs"]
    if not any(r["scenario"] in (PEER, PEER_STREAM, PEER_DISK) for r in runs):
        return []
    unc, cor = "latency_uncorrected_ms", "latency_corrected_ms"
    rows = []
    for c in (1, 16, 64):
        target = Target(10.0, True, "≥ 10×") if c == 64 else None
        rows.append(
            _row(
                f"req/s at c={c}",
                throughput(runs, PEER, c),
                throughput(runs, OURS, c),
                "req/s",
                target,
            )
        )
    for label, through_peer, through_ours, direct in (
        ("", PEER, OURS, "direct"),
        (", disk writer", PEER_DISK, GATEWAY_DISK, DIRECT_DISK),
    ):
        p99_target = Target(1 / 2, False, "≤ 1/2") if label else Target(1 / 3, False, "≤ 1/3")
        rows.append(
            _row(
                f"overhead p50 at c=1{label} (uncorrected)",
                overhead(runs, through_peer, direct, 1, "p50"),
                overhead(runs, through_ours, direct, 1, "p50"),
                "ms",
                None if label else Target(1 / 6, False, "≤ 1/6"),
            )
        )
        rows.append(
            _row(
                f"overhead p99 at c=1{label} (uncorrected)",
                overhead(runs, through_peer, direct, 1, "p99"),
                overhead(runs, through_ours, direct, 1, "p99"),
                "ms",
                p99_target,
            )
        )
        rows.append(
            _row(
                f"p99 at c=1{label} as wrk reports it (corrected)",
                latency(runs, through_peer, 1, "p99", cor),
                latency(runs, through_ours, 1, "p99", cor),
                "ms",
                None,
            )
        )
    rows.append(
        _row(
            "p99 at c=64 (uncorrected)",
            latency(runs, PEER, 64, "p99", unc),
            latency(runs, OURS, 64, "p99", unc),
            "ms",
            Target(1 / 10, False, "≤ 1/10"),
        )
    )
    rows.append(
        _row(
            "p99 at c=64 as wrk reports it (corrected)",
            latency(runs, PEER, 64, "p99", cor),
            latency(runs, OURS, 64, "p99", cor),
            "ms",
            None,
        )
    )
    rows.append(
        _row(
            "streams/s at c=16",
            throughput(runs, PEER_STREAM, 16),
            throughput(runs, OURS_STREAM, 16),
            "streams/s",
            Target(10.0, True, "≥ 10×"),
        )
    )
    rows.append(
        _row(
            "TTFB p50 at c=16 (uncorrected)",
            latency(runs, PEER_STREAM, 16, "p50", "ttfb_ms"),
            latency(runs, OURS_STREAM, 16, "p50", "ttfb_ms"),
            "ms",
            Target(1 / 10, False, "≤ 1/10"),
        )
    )
    rows.append(
        _row(
            "RSS under load (LiteLLM's process tree; our three services summed)",
            peak_rss(runs, (PEER_PROCESS,)),
            peak_rss(runs, OUR_SERVICES),
            "MiB",
            Target(2 / 3, False, "≤ 2/3"),
        )
    )
    rows += soak_rows(results.get("soak"))
    return rows


def soak_rows(soak: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The soak's errors and RSS growth: absolute targets, ours only (LiteLLM is not soaked)."""
    errors = None if soak is None else float(soak["errors"])
    growth = None if soak is None else float(soak["rss_growth_pct"])
    return [
        {
            "figure": "soak at c=16: errors (BENCH_SOAK)",
            "unit": "",
            "litellm": None,
            "aicreds": errors,
            "ratio": None,
            "target": "0",
            "met": None if errors is None else errors == 0,
            "errors": [],
        },
        {
            "figure": "soak at c=16: RSS growth (BENCH_SOAK)",
            "unit": "%",
            "litellm": None,
            "aicreds": growth,
            "ratio": None,
            "target": f"≤ {SOAK_GROWTH_PCT:.0f} %",
            "met": None if growth is None else growth <= SOAK_GROWTH_PCT,
            "errors": [],
        },
    ]


def _value(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit in ("req/s", "streams/s", "MiB"):
        return f"{value:.0f} {unit}"
    if unit == "%":
        return f"{value:+.1f} %"
    if unit == "ms":
        return f"{value:.2f} ms"
    return f"{value:g}"


def side_by_side_markdown(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The table for summary.md and the README (empty without the peer)."""
    if not rows:
        return []
    out = [
        "",
        "## Side by side with LiteLLM (issue 20)",
        "",
        "Same fake upstream, same load generators, same bench. Ratio = aicreds ÷ LiteLLM. "
        "*Uncorrected*: what each request took (latency client / streaming client); *as wrk "
        "reports it*: wrk 4.1's percentiles, corrected for coordinated omission. Overhead = "
        "through the proxy − straight to the fake upstream (same percentile, same kind).",
        "",
        "| figure | LiteLLM | aicreds | ratio | target | met? |",
        "|---|---|---|---|---|---|",
    ]
    met_cell = {True: "yes", False: "**no**", None: "—"}
    for row in rows:
        ratio_cell = "—" if row["ratio"] is None else f"{row['ratio']:.3g}×"
        flag = " ⚠ errors" if row["errors"] else ""
        out.append(
            f"| {row['figure']} | {_value(row['litellm'], row['unit'])} | "
            f"{_value(row['aicreds'], row['unit'])} | {ratio_cell} | {row['target'] or '—'} | "
            f"{met_cell[row['met']]}{flag} |"
        )
    flagged = sorted({e for row in rows for e in row["errors"]})
    if flagged:
        out += ["", "**Runs with errors** (their figures cannot be quoted): " + "; ".join(flagged)]
    return out
