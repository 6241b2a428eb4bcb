"""The tracing figures of `BENCH_TRACING=true`: traced ÷ untraced from one bench's runs, the
summary's table, the OTLP sink, and the off path's hooks timed in a process that never traces."""

from __future__ import annotations

import httpx
import pytest

from bench.config import BenchConfig
from bench.otlp_sink import OtlpSink
from bench.tracing_off import HOOKS_PER_CALL, off_path_cost
from bench.tracing_report import tracing_cost, tracing_cost_markdown
from services.common import tracing


def _run(scenario: str, c: int, rps: float, p50: float, cpu: float) -> dict[str, object]:
    services = {n: {"cpu_ms_per_request": cpu / 3} for n in ("vault", "router", "gateway")}
    return {
        "scenario": scenario,
        "concurrency": c,
        "rps": rps,
        "errors": 0,
        "latency_ms": {"p50": p50, "p99": p50 * 2},
        "services": {**services, "upstream": {"cpu_ms_per_request": 5.0}},
    }


def test_tracing_is_off_unless_asked() -> None:
    assert not BenchConfig.from_env({}).tracing
    assert BenchConfig.from_env({"BENCH_TRACING": "true"}).tracing


def test_traced_runs_are_divided_by_the_untraced_ones_at_the_same_concurrency() -> None:
    runs = [
        _run("gateway", 1, 200.0, 4.0, 3.0),
        _run("gateway_traced", 1, 150.0, 5.0, 3.6),
        _run("gateway", 16, 400.0, 40.0, 2.0),  # no traced run at c=16: no row
    ]
    [row] = tracing_cost(runs)
    assert row["concurrency"] == 1
    assert (row["rps_ratio"], row["p50_ratio"], row["p99_ratio"]) == (0.75, 1.25, 1.25)
    assert (row["cpu_ms_off"], row["cpu_ms_on"], row["cpu_ratio"]) == (3.0, 3.6, 1.2)
    off = {"ns_per_hook": {"log_line": 80.0}, "hooks_per_call": {"log_line": 4}, "ns_per_call": 320}
    text = "\n".join(tracing_cost_markdown([row], {"requests": 3, "bytes": 2_000_000}, off))
    assert "| 1 | 200 | 150 | 0.750 |" in text
    assert "3 OTLP export requests (2.0 MB)" in text
    assert "**320 ns per call**" in text
    assert tracing_cost_markdown([], None) == []


def test_the_off_path_is_timed_per_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracing, "active", False)  # as in the bench's process
    cost = off_path_cost()
    assert set(cost["ns_per_hook"]) == set(HOOKS_PER_CALL)
    assert 0 < cost["ns_per_call"] < 100_000  # well under 0.1 ms on any machine


def test_the_sink_accepts_and_counts_exports() -> None:
    with OtlpSink() as sink:
        answer = httpx.post(f"{sink.endpoint}/v1/traces", content=b"\x0a\x00")
    assert answer.status_code == 200
    assert (sink.requests, sink.bytes) == (1, 2)
