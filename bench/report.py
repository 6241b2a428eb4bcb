"""Turning the runs of one bench into figures, targets met or not, and `summary.md`.

Every comparison is against a baseline measured in the same bench run, on the same machine,
at the same concurrency, so that a busy machine moves both sides:

- overhead (ms) = latency through the stack - latency direct to the fake upstream, per
  percentile (p50 with p50, p99 with p99) at the same concurrency;
- streaming overhead = the same for time to first byte and time to the end of the stream;
- upstream headroom = the fake upstream's best throughput / the stack's best throughput;
- vault backends = `Resolve` on PostgreSQL (1 or N replicas) / on SQLite, ops/s and each
  latency percentile, at the same concurrency;
- tracing = `gateway_traced` / `gateway`, req/s, p50, p99 and CPU per call (`tracing_report`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.config import VAULT_PG_SCENARIO
from bench.side_by_side import side_by_side, side_by_side_markdown
from bench.stats import overhead
from bench.tracing_report import tracing_cost, tracing_cost_markdown

# Issue 8's targets for this 2-core machine.
TARGET_OVERHEAD_P50_MS = 1.0
TARGET_OVERHEAD_P99_MS = 2.5
TARGET_GATEWAY_RPS_C64 = 1000.0
TARGET_GATEWAY_P99_C64_MS = 100.0
TARGET_TTFB_OVERHEAD_MS = 1.5
TARGET_RSS_MIB = 300.0
TARGET_SOAK_GROWTH_PCT = 5.0
TARGET_UPSTREAM_RATIO = 20.0

# The scenarios compared with `direct` (plain JSON) and with `stream_direct` (SSE).
THROUGH_SCENARIOS = ("gateway", "router_grpc")
# Each request/response scenario's baseline: the same load straight to the fake upstream, under
# the same conditions (the disk writer running or not).
BASELINES = {
    "gateway": "direct",
    "router_grpc": "direct",
    "litellm": "direct",
    "gateway_disk": "direct_disk",
    "litellm_disk": "direct_disk",
}
STACK_SERVICES = ("vault", "router", "gateway")

SCENARIO_TITLES = {
    "direct": "direct to the fake upstream (wrk)",
    "gateway": "gateway `/v1/chat/completions` (wrk)",
    "router_grpc": "router gRPC `Invoke` (Python grpc.aio client)",
    "vault_resolve": "vault gRPC `Resolve` alone (Python grpc.aio client)",
    "stream_direct": "SSE direct to the fake upstream (latency client)",
    "stream_gateway": "SSE through the gateway (latency client)",
    "rest_put": "REST `PUT /ai-credentials/{key}` (wrk)",
    "rest_get": "REST `GET /ai-credentials` (wrk)",
    "direct_disk": "direct, with a competing disk writer (wrk)",
    "gateway_disk": "gateway, with a competing disk writer (wrk)",
    "litellm": "LiteLLM `/v1/chat/completions` (wrk)",
    "litellm_disk": "LiteLLM, with a competing disk writer (wrk)",
    "stream_litellm": "SSE through LiteLLM (latency client)",
}


def find_run(
    runs: Iterable[Mapping[str, Any]], scenario: str, concurrency: int
) -> Mapping[str, Any] | None:
    """The run of `scenario` at `concurrency`, if one was measured."""
    for run in runs:
        if run["scenario"] == scenario and run["concurrency"] == concurrency:
            return run
    return None


def _concurrencies(runs: Iterable[Mapping[str, Any]], scenario: str) -> list[int]:
    return sorted({int(r["concurrency"]) for r in runs if r["scenario"] == scenario})


def _latency(run: Mapping[str, Any]) -> Any:
    """The run's uncorrected percentiles when it has them, else `latency_ms`."""
    return run.get("latency_uncorrected_ms") or run.get("latency_ms")


def overheads(runs: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Overhead per through-scenario and concurrency, against the same-run direct baseline.

    From uncorrected percentiles where the runs have them: wrk's corrected p99 of the fast
    direct baseline can exceed the stack's, which made p99 overheads meaningless."""
    result: dict[str, dict[str, Any]] = {}
    for scenario, baseline in BASELINES.items():
        for c in _concurrencies(runs, scenario):
            through = find_run(runs, scenario, c)
            direct = find_run(runs, baseline, c)
            if through is None or direct is None:
                continue
            delta = overhead(_latency(through), _latency(direct))
            if delta is not None:
                result.setdefault(scenario, {})[str(c)] = delta
    for scenario in ("stream_gateway", "stream_litellm"):
        for c in _concurrencies(runs, scenario):
            through = find_run(runs, scenario, c)
            direct = find_run(runs, "stream_direct", c)
            if through is None or direct is None:
                continue
            entry = {
                "ttfb": overhead(through.get("ttfb_ms"), direct.get("ttfb_ms")),
                "end": overhead(through.get("end_ms"), direct.get("end_ms")),
            }
            result.setdefault(scenario, {})[str(c)] = entry
    return result


def backend_label(scenario: str) -> str:
    """`sqlite ×1` for `vault_resolve`, `postgresql ×N` for `vault_resolve_pg<N>`."""
    if scenario.startswith(VAULT_PG_SCENARIO):
        return f"postgresql ×{scenario[len(VAULT_PG_SCENARIO) :]}"
    return "sqlite ×1"


def _ratio(value: Any, base: Any) -> float | None:
    if value is None or base is None or float(base) <= 0:
        return None
    return round(float(value) / float(base), 3)


def vault_backends(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """`Resolve` per database backend and concurrency, with ratios against SQLite (same run,
    same concurrency): ops/s ratio > 1 is faster, latency ratio > 1 is slower."""
    scenarios = sorted(
        {str(r["scenario"]) for r in runs if str(r["scenario"]).startswith(VAULT_PG_SCENARIO)},
        key=lambda name: int(name[len(VAULT_PG_SCENARIO) :] or 0),
    )
    if not scenarios:
        return []
    rows = []
    levels = sorted({int(r["concurrency"]) for r in runs if r["scenario"] in scenarios})
    for c in levels:
        base = find_run(runs, "vault_resolve", c)
        base_lat = (base or {}).get("latency_ms") or {}
        for scenario in ["vault_resolve", *scenarios]:
            run = find_run(runs, scenario, c)
            if run is None:
                continue
            lat = run.get("latency_ms") or {}
            services = run.get("services") or {}
            vaults = [v for n, v in services.items() if n.split(".")[0] == "vault"]
            pg = services.get("postgresql") or {}
            rows.append(
                {
                    "backend": backend_label(scenario),
                    "scenario": scenario,
                    "concurrency": c,
                    "rps": run["rps"],
                    "p50": lat.get("p50"),
                    "p99": lat.get("p99"),
                    "errors": run["errors"],
                    "rps_ratio": _ratio(run["rps"], base["rps"]) if base else None,
                    "p50_ratio": _ratio(lat.get("p50"), base_lat.get("p50")),
                    "p99_ratio": _ratio(lat.get("p99"), base_lat.get("p99")),
                    "vault_cpu_ms": (
                        round(sum(float(v.get("cpu_ms_per_request") or 0) for v in vaults), 3)
                        if vaults
                        else None
                    ),
                    "postgresql_cpu_ms": pg.get("cpu_ms_per_request"),
                    "xact_per_request": pg.get("xact_per_request"),
                }
            )
    return rows


def vault_backends_markdown(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The `Resolve`-by-backend table (empty without PostgreSQL runs)."""
    if not rows:
        return []
    out = [
        "",
        "## Vault `Resolve` by database backend (issue 16)",
        "",
        "Per-call latency recorded by the Python client (uncorrected, closed loop); ratios are "
        "against `sqlite ×1` at the same concurrency in this run. CPU ms per `Resolve`: all vault "
        "processes together, and the PostgreSQL backends serving the bench's database; "
        "transactions per `Resolve` from its `pg_stat_database`.",
        "",
        "| backend × vaults | c | ops/s | p50 ms | p99 ms | errors | ops/s ÷ sqlite "
        "| p50 ÷ sqlite | p99 ÷ sqlite | vault CPU ms/op | PostgreSQL CPU ms/op | PG xacts/op |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        out.append(
            f"| {row['backend']} | {row['concurrency']} | {_cell(row['rps'], 0)} | "
            f"{_cell(row['p50'])} | {_cell(row['p99'])} | {row['errors']} | "
            f"{_cell(row['rps_ratio'])} | {_cell(row['p50_ratio'])} | "
            f"{_cell(row['p99_ratio'])} | {_cell(row.get('vault_cpu_ms'), 3)} | "
            f"{_cell(row.get('postgresql_cpu_ms'), 3)} | {_cell(row.get('xact_per_request'))} |"
        )
    return out


def upstream_headroom(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The fake upstream's best req/s over the stack's best (gateway or router), same run."""
    direct = [r["rps"] for r in runs if r["scenario"] == "direct"]
    stack = [r["rps"] for r in runs if r["scenario"] in THROUGH_SCENARIOS]
    if not direct or not stack or max(stack) <= 0:
        return None
    return {
        "direct_rps": max(direct),
        "stack_rps": max(stack),
        "ratio": round(max(direct) / max(stack), 1),
    }


def memory_under_load(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Peak RSS of each service over all runs, and the largest sum within one run (MiB)."""
    peaks: dict[str, float] = {}
    worst_sum = 0.0
    worst_run = ""
    for run in runs:
        services = run.get("services") or {}
        total = 0.0
        for name in STACK_SERVICES:
            figures = services.get(name)
            if not figures:
                continue
            peak = float(figures.get("peak_rss_mib") or 0.0)
            peaks[name] = max(peaks.get(name, 0.0), peak)
            total += peak
        if total > worst_sum:
            worst_sum = total
            worst_run = f"{run['scenario']} c={run['concurrency']}"
    if not peaks:
        return None
    return {"peak_rss_mib": peaks, "sum_mib": round(worst_sum, 1), "during": worst_run}


def _fmt_ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} ms"


def _row(figure: str, value: str, target: str, met: bool | None) -> dict[str, Any]:
    return {"figure": figure, "value": value, "target": target, "met": met}


def targets(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with this run's value and whether it is met (None: not run)."""
    runs = results["runs"]
    over = results.get("overhead", {})
    rows = []
    for scenario, label in (("gateway", "gateway"), ("router_grpc", "router gRPC")):
        c1 = over.get(scenario, {}).get("1")
        for key, limit in (("p50", TARGET_OVERHEAD_P50_MS), ("p99", TARGET_OVERHEAD_P99_MS)):
            value = c1.get(key) if c1 else None
            rows.append(
                _row(
                    f"{label} overhead at c=1, {key}",
                    _fmt_ms(value),
                    f"≤ {limit} ms",
                    None if value is None else value <= limit,
                )
            )
    g64 = find_run(runs, "gateway", 64)
    rps = g64["rps"] if g64 else None
    p99 = g64["latency_ms"]["p99"] if g64 and g64.get("latency_ms") else None
    errors = g64["errors"] if g64 else None
    rows.append(
        _row(
            "gateway throughput at c=64",
            "—" if rps is None else f"{rps:.0f} req/s",
            f"≥ {TARGET_GATEWAY_RPS_C64:.0f} req/s",
            None if rps is None else rps >= TARGET_GATEWAY_RPS_C64,
        )
    )
    rows.append(
        _row(
            "gateway p99 at c=64",
            _fmt_ms(p99),
            f"≤ {TARGET_GATEWAY_P99_C64_MS:.0f} ms",
            None if p99 is None else p99 <= TARGET_GATEWAY_P99_C64_MS,
        )
    )
    rows.append(
        _row(
            "gateway errors at c=64",
            "—" if errors is None else str(errors),
            "0",
            None if errors is None else errors == 0,
        )
    )
    stream = over.get("stream_gateway", {}).get("1")
    ttfb = stream["ttfb"]["p50"] if stream and stream.get("ttfb") else None
    rows.append(
        _row(
            "streaming TTFB above direct at c=1 (p50)",
            _fmt_ms(ttfb),
            f"≤ {TARGET_TTFB_OVERHEAD_MS} ms",
            None if ttfb is None else ttfb <= TARGET_TTFB_OVERHEAD_MS,
        )
    )
    memory = results.get("memory") or {}
    total = memory.get("sum_mib")
    rows.append(
        _row(
            "RSS of the three services under load (sum of peaks)",
            "—" if total is None else f"{total:.0f} MiB ({memory.get('during')})",
            f"< {TARGET_RSS_MIB:.0f} MiB",
            None if total is None else total < TARGET_RSS_MIB,
        )
    )
    soak = results.get("soak")
    growth = soak.get("rss_growth_pct") if soak else None
    rows.append(
        _row(
            "soak at c=16: RSS growth",
            "not run (BENCH_SOAK=true)"
            if soak is None
            else f"{growth:+.1f} % over {soak['duration_s']:.0f} s",
            f"≤ {TARGET_SOAK_GROWTH_PCT:.0f} %",
            None if growth is None else growth <= TARGET_SOAK_GROWTH_PCT,
        )
    )
    rows.append(
        _row(
            "soak at c=16: errors",
            "not run (BENCH_SOAK=true)" if soak is None else str(soak["errors"]),
            "0",
            None if soak is None else soak["errors"] == 0,
        )
    )
    headroom = results.get("upstream_headroom")
    ratio = headroom["ratio"] if headroom else None
    rows.append(
        _row(
            "fake upstream throughput / stack throughput",
            "—" if ratio is None else f"{ratio:.0f}×",
            f"≥ {TARGET_UPSTREAM_RATIO:.0f}×",
            None if ratio is None else ratio >= TARGET_UPSTREAM_RATIO,
        )
    )
    return rows


def derive(
    meta: Mapping[str, Any],
    runs: Sequence[Mapping[str, Any]],
    soak: Any,
    profile: Any = None,
) -> dict[str, Any]:
    """The whole results document: inputs, runs and every derived figure."""
    results: dict[str, Any] = {
        "meta": dict(meta),
        "runs": list(runs),
        "overhead": overheads(runs),
        "upstream_headroom": upstream_headroom(runs),
        "memory": memory_under_load(runs),
        "vault_backends": vault_backends(runs),
        "tracing": tracing_cost(runs),
        "soak": soak,
        "profile": profile,
    }
    results["targets"] = targets(results)
    results["side_by_side"] = side_by_side(results)
    return results


def _met(value: bool | None) -> str:
    return {True: "yes", False: "**no**", None: "not measured"}[value]


def _cell(value: Any, digits: int = 2) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def summary_markdown(results: Mapping[str, Any]) -> str:
    """`summary.md`: the targets table, then every run and the per-service costs."""
    meta = results["meta"]
    runs = results["runs"]
    over = results.get("overhead", {})
    out = [
        f"# aicreds bench — {meta.get('started_at', '?')}",
        "",
        f"Commit `{meta.get('commit', '?')}`; each run {meta.get('duration_s')} s after a "
        f"{meta.get('warmup_s')} s warm-up; {meta.get('cpus')} CPUs; load average at start "
        f"{meta.get('loadavg_start', '?')}. Overheads are against the direct runs of this same "
        "bench (same concurrency, same percentile).",
        "",
        "Two kinds of latency percentiles: **corrected** = as wrk 4.1 reports them (it adds "
        "synthetic samples for coordinated omission, so a few real stalls fatten its p99; for "
        "the Python clients, wrk's correction applied to their per-call times), **uncorrected** "
        "= what each request took (the latency client right after each wrk run, same load; "
        "the Python clients' own per-call times).",
    ]
    out += side_by_side_markdown(results.get("side_by_side") or [])
    out += [
        "",
        "## Targets (issue 8)",
        "",
        "| figure | value | target | met? |",
        "|---|---|---|---|",
    ]
    for row in results["targets"]:
        out.append(f"| {row['figure']} | {row['value']} | {row['target']} | {_met(row['met'])} |")
    out += [
        "",
        "## Request/response runs",
        "",
        "req/s and the service figures are wrk's run (or the Python client's); p50 / p99 in ms "
        "of both kinds; overhead from the uncorrected ones (through − direct, same c); client "
        "CPU µs/req of wrk (or the Python client) and of the latency client.",
        "",
        "| scenario | c | req/s | p50 ms | p90 ms | p99 ms | p50 / p99 uncorrected | p50 / p99"
        " corrected | errors | overhead p50 / p90 / p99 ms | client CPU µs/req |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        if run["scenario"].startswith("stream_"):
            continue
        lat = run.get("latency_ms") or {}
        delta = over.get(run["scenario"], {}).get(str(run["concurrency"]))
        delta_cell = (
            " / ".join(_cell(delta.get(k)) for k in ("p50", "p90", "p99")) if delta else "—"
        )
        unc = run.get("latency_uncorrected_ms") or {}
        cor = run.get("latency_corrected_ms") or {}
        client_cpu = _cell((run.get("client") or {}).get("cpu_us_per_request"), 1)
        second = (run.get("uncorrected_run") or {}).get("cpu_us_per_request")
        if second is not None:
            client_cpu += f"; {_cell(second, 1)}"
        out.append(
            f"| {run['scenario']} | {run['concurrency']} | {_cell(run['rps'], 0)} | "
            f"{_cell(lat.get('p50'))} | {_cell(lat.get('p90'))} | {_cell(lat.get('p99'))} | "
            f"{_cell(unc.get('p50'))} / {_cell(unc.get('p99'))} | "
            f"{_cell(cor.get('p50'))} / {_cell(cor.get('p99'))} | "
            f"{run['errors']} | {delta_cell} | {client_cpu} |"
        )
    out += vault_backends_markdown(results.get("vault_backends") or [])
    out += tracing_cost_markdown(
        results.get("tracing") or [], meta.get("otlp_exports"), meta.get("tracing_off")
    )
    stream_runs = [r for r in runs if r["scenario"].startswith("stream_")]
    if stream_runs:
        out += [
            "",
            "## Streaming (SSE)",
            "",
            "TTFB and end: uncorrected (the latency client's per-call times); corrected: wrk's "
            "correction applied to those times. Client CPU: the latency client's, per stream.",
            "",
            "| scenario | c | streams/s | TTFB p50 / p99 ms | end p50 / p99 ms | errors "
            "| TTFB overhead p50 / p99 ms | end overhead p50 / p99 ms | TTFB p50 / p99 corrected "
            "| end p50 / p99 corrected | client CPU µs/stream |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for run in stream_runs:
            ttfb = run.get("ttfb_ms") or {}
            end = run.get("end_ms") or {}
            delta = over.get(run["scenario"], {}).get(str(run["concurrency"])) or {}
            d_ttfb = delta.get("ttfb") or {}
            d_end = delta.get("end") or {}
            ttfb_cor = run.get("ttfb_corrected_ms") or {}
            end_cor = run.get("latency_corrected_ms") or {}
            out.append(
                f"| {run['scenario']} | {run['concurrency']} | {_cell(run['rps'], 0)} | "
                f"{_cell(ttfb.get('p50'))} / {_cell(ttfb.get('p99'))} | "
                f"{_cell(end.get('p50'))} / {_cell(end.get('p99'))} | {run['errors']} | "
                f"{_cell(d_ttfb.get('p50'))} / {_cell(d_ttfb.get('p99'))} | "
                f"{_cell(d_end.get('p50'))} / {_cell(d_end.get('p99'))} | "
                f"{_cell(ttfb_cor.get('p50'))} / {_cell(ttfb_cor.get('p99'))} | "
                f"{_cell(end_cor.get('p50'))} / {_cell(end_cor.get('p99'))} | "
                f"{_cell((run.get('client') or {}).get('cpu_us_per_request'), 1)} |"
            )
    cost_runs = [r for r in runs if r.get("services")]
    if cost_runs:
        present = {n for r in cost_runs for n in r["services"]}
        names = [n for n in STACK_SERVICES if n in present] + sorted(present - set(STACK_SERVICES))
        out += [
            "",
            "## CPU per request and peak RSS, per service",
            "",
            "CPU ms per request = the service's CPU seconds (user + system, /proc/<pid>/stat) "
            "during the run / requests completed. Peak RSS = VmHWM, reset before each run.",
            "",
            "| scenario | c | "
            + " | ".join(f"{n} CPU ms/req, peak MiB" for n in names)
            + " | vault+router+gateway CPU ms/req |",
            "|---|---|" + "---|" * (len(names) + 1),
        ]
        for run in cost_runs:
            cells = []
            for name in names:
                fig = run["services"].get(name)
                if not fig:
                    cells.append("—")
                    continue
                cpu = _cell(fig.get("cpu_ms_per_request"), 3)
                cells.append(f"{cpu}, {_cell(fig.get('peak_rss_mib'), 0)}")
            # Every vault replica (`vault.2`, ...) counts as vault.
            ours = [n for n in run["services"] if n.split(".")[0] in STACK_SERVICES]
            stack_cpu = sum(
                float(run["services"][n].get("cpu_ms_per_request") or 0.0) for n in ours
            )
            cells.append(_cell(stack_cpu, 3) if ours else "—")
            out.append(f"| {run['scenario']} | {run['concurrency']} | " + " | ".join(cells) + " |")
    headroom = results.get("upstream_headroom")
    if headroom:
        out += [
            "",
            f"Fake upstream: {headroom['direct_rps']:.0f} req/s at best, the stack "
            f"{headroom['stack_rps']:.0f} req/s: {headroom['ratio']:.0f}× headroom.",
        ]
    for scenarios, writer in (meta.get("disk_writers") or {}).items():
        if "error" in writer:
            out += ["", f"Disk writer during {scenarios}: {writer['error']}"]
            continue
        out += [
            "",
            f"Disk writer during {scenarios}: {writer.get('block_mib')} MiB blocks, "
            f"{writer.get('mib_per_s')} MiB/s written and synced, fdatasync p50 "
            f"{writer.get('fdatasync_ms_p50')} ms, max {writer.get('fdatasync_ms_max')} ms; "
            f"its own CPU {writer.get('cpu_share_of_one_core')} of one core.",
        ]
    peer_log = meta.get("peer_log")
    if peer_log is not None:
        out += [
            "",
            f"LiteLLM's log: {peer_log['count']} line(s) reporting an error or exception"
            + (": `" + "`; `".join(peer_log["first"][:3]) + "`" if peer_log["first"] else "."),
        ]
    soak = results.get("soak")
    if soak:
        out += [
            "",
            f"Soak: {soak['duration_s']:.0f} s at c={soak['concurrency']}, "
            f"{soak['requests']} requests, {soak['errors']} errors, RSS of the three services "
            f"{soak['rss_start_mib']:.0f} → {soak['rss_end_mib']:.0f} MiB "
            f"({soak['rss_growth_pct']:+.1f} %).",
        ]
    profile = results.get("profile")
    if profile:
        from bench.profiling import markdown

        out += markdown(profile["services"], profile.get("scenario", "gateway"))
    charts = meta.get("charts") or []
    if charts:
        out += ["", "Charts: " + ", ".join(f"`{c}`" for c in charts) + "."]
    return "\n".join(out) + "\n"


def write_results(directory: Path, results: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write `results.json` and `summary.md` into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / "results.json"
    json_path.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
    md_path = directory / "summary.md"
    md_path.write_text(summary_markdown(results))
    return json_path, md_path
