"""What tracing costs (`BENCH_TRACING=true`): `gateway_traced` against `gateway` of the same
bench, at the same concurrency, minutes apart on the same machine.

Ratios: traced ÷ untraced, so a throughput ratio below 1 and a latency ratio above 1 are the
cost of making, batching, encoding and exporting every span (a model call makes five: the
gateway's request, the router's RPC, the vault's `Resolve`, the upstream request, and the
vault's `Authenticate` when the gateway's cache misses). CPU per call is all three services
together.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bench.config import TRACED_SCENARIO

_SERVICES = ("vault", "router", "gateway")


def _ratio(value: Any, base: Any) -> float | None:
    if value is None or base is None or float(base) <= 0:
        return None
    return round(float(value) / float(base), 3)


def _find(runs: Sequence[Mapping[str, Any]], scenario: str, c: int) -> Mapping[str, Any] | None:
    return next((r for r in runs if r["scenario"] == scenario and r["concurrency"] == c), None)


def _stack_cpu_ms(run: Mapping[str, Any]) -> float | None:
    services = run.get("services") or {}
    parts = [services[n].get("cpu_ms_per_request") for n in _SERVICES if n in services]
    return round(sum(float(p or 0) for p in parts), 3) if parts else None


def tracing_cost(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per concurrency with both runs (empty without `gateway_traced` runs)."""
    rows = []
    for traced in runs:
        if traced["scenario"] != TRACED_SCENARIO:
            continue
        c = int(traced["concurrency"])
        base = _find(runs, "gateway", c)
        if base is None:
            continue
        on, off = traced.get("latency_ms") or {}, base.get("latency_ms") or {}
        cpu_on, cpu_off = _stack_cpu_ms(traced), _stack_cpu_ms(base)
        rows.append(
            {
                "concurrency": c,
                "rps_off": base["rps"],
                "rps_on": traced["rps"],
                "rps_ratio": _ratio(traced["rps"], base["rps"]),
                "p50_off": off.get("p50"),
                "p50_on": on.get("p50"),
                "p50_ratio": _ratio(on.get("p50"), off.get("p50")),
                "p99_ratio": _ratio(on.get("p99"), off.get("p99")),
                "cpu_ms_off": cpu_off,
                "cpu_ms_on": cpu_on,
                "cpu_ratio": _ratio(cpu_on, cpu_off),
                "errors_on": traced["errors"],
            }
        )
    return rows


def _cell(value: Any, digits: int = 2) -> str:
    if value is None:
        return "—"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def tracing_cost_markdown(
    rows: Sequence[Mapping[str, Any]],
    exports: Mapping[str, int] | None,
    off: Mapping[str, Any] | None = None,
) -> list[str]:
    """The tracing table of `summary.md` (empty without traced runs)."""
    if not rows:
        return []
    sent = ""
    if exports:
        sent = (
            f" The traced stack sent {exports.get('requests', 0)} OTLP export requests "
            f"({exports.get('bytes', 0) / 1e6:.1f} MB) to the sink."
        )
    out = [
        "",
        "## Tracing on ÷ off (issue 18)",
        "",
        "`gateway_traced` (every service exporting OTLP to a local sink) against `gateway` "
        "(tracing off) in this run, same concurrency; CPU ms per call of the three services "
        f"together.{sent}",
        "",
        "| c | req/s off | req/s on | req/s on ÷ off | p50 ms off | p50 ms on | p50 on ÷ off "
        "| p99 on ÷ off | CPU ms/call off | on | on ÷ off | errors on |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        out.append(
            f"| {row['concurrency']} | {_cell(row['rps_off'], 0)} | {_cell(row['rps_on'], 0)} | "
            f"{_cell(row['rps_ratio'], 3)} | {_cell(row['p50_off'])} | {_cell(row['p50_on'])} | "
            f"{_cell(row['p50_ratio'], 3)} | {_cell(row['p99_ratio'], 3)} | "
            f"{_cell(row['cpu_ms_off'], 3)} | {_cell(row['cpu_ms_on'], 3)} | "
            f"{_cell(row['cpu_ratio'], 3)} | {row['errors_on']} |"
        )
    if off:
        per_hook = off.get("ns_per_hook") or {}
        counts = off.get("hooks_per_call") or {}
        parts = ", ".join(f"{counts.get(k)} × {v} ns ({k})" for k, v in per_hook.items())
        ns = float(off.get("ns_per_call") or 0)
        cpu = min((r["cpu_ms_off"] for r in rows if r.get("cpu_ms_off")), default=None)
        share = f", {ns / (cpu * 1e6) * 100:.4f} % of the least CPU per call above" if cpu else ""
        out += [
            "",
            f"Tracing off (bench/tracing_off.py): the hooks a model call runs cost {parts}: "
            f"**{ns:.0f} ns per call**{share}.",
        ]
    return out
