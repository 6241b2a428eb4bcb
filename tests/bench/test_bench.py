"""The bench harness's pure parts: statistics, wrk scripts and reports, settings, /proc parsing,
and one request of each kind to the fake upstream. No load is generated here."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench import fake_upstream
from bench.config import ALL_SCENARIOS, BenchConfig
from bench.load import (
    STREAM_CLIENT,
    CallOutcome,
    HttpRequestSpec,
    LoopResult,
    loop_to_run,
    parse_wrk_output,
    round_robin,
    wrk_script,
    wrk_to_run,
)
from bench.procstats import parse_stat_cpu_ticks, parse_status_kib
from bench.profiling import parse_collapsed
from bench.report import derive, summary_markdown, write_results
from bench.stack import _user_id_from_debug, provider_body, stack_environment
from bench.stats import overhead, percentile, rss_growth_pct, summarize_ms
from bench.vault_backends import database_url, redacted

# --- statistics ------------------------------------------------------------------------------


def test_percentile_interpolates_like_numpy_linear() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 50) == pytest.approx(2.5)
    assert percentile(values, 90) == pytest.approx(3.7)
    assert percentile([7.0], 99) == 7.0


def test_percentile_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_summarize_ms_sorts_and_reports_tail() -> None:
    samples = [float(v) for v in range(100, 0, -1)]  # 100..1, unsorted on purpose
    summary = summarize_ms(samples)
    assert summary is not None
    assert summary.p50 == pytest.approx(50.5)
    assert summary.p99 == pytest.approx(99.01)
    assert summary.max == 100.0
    assert summary.mean == pytest.approx(50.5)
    assert summarize_ms([]) is None


def test_overhead_is_through_minus_direct_per_percentile() -> None:
    through = {"p50": 3.0, "p90": 5.0, "p99": 9.5, "mean": 4.0}
    direct = {"p50": 0.5, "p90": 1.0, "p99": 2.0, "mean": 0.7}
    assert overhead(through, direct) == {"p50": 2.5, "p90": 4.0, "p99": 7.5}
    assert overhead(None, direct) is None


def test_rss_growth_uses_medians_of_both_ends() -> None:
    # A spike in the first window does not decide the start figure.
    timeline = [100.0, 300.0, 100.0] + [101.0] * 24 + [104.0, 104.0, 104.0]
    start, end, growth = rss_growth_pct(timeline)
    assert start == 100.0
    assert end == 104.0
    assert growth == pytest.approx(4.0)


# --- wrk --------------------------------------------------------------------------------------

WRK_STDOUT = """Running 2s test @ http://127.0.0.1:8080
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   282.62us  588.35us   8.33ms   94.75%
  183249 requests in 2.00s, 13.81MB read
  Non-2xx or 3xx responses: 12
Requests/sec:  91579.31
BENCH_JSON {"requests":183249,"duration_us":2000512,"errors":{"connect":0,"read":1,"write":0,\
"status":12,"timeout":0},"latency_us":{"p50":229.0,"p90":515.0,"p99":3329.0,"mean":350.6,\
"max":5478.0}}
"""


def test_parse_wrk_output_reads_the_done_report() -> None:
    report = parse_wrk_output(WRK_STDOUT)
    assert report.requests == 183249
    assert report.duration_s == pytest.approx(2.000512)
    assert report.latency_ms["p50"] == pytest.approx(0.229)
    assert report.latency_ms["p99"] == pytest.approx(3.329)
    assert report.error_count == 13
    run = wrk_to_run("gateway", 16, report, cpu_s=1.8)
    # Answers of 400 and above are errors, not requests served.
    assert run.requests == 183249 - 12
    assert run.errors == 13
    assert run.error_detail == {"read": 1, "status": 12}
    assert run.as_dict()["rps"] == pytest.approx(round((183249 - 12) / 2.000512, 1))


def test_parse_wrk_output_without_report_says_what_wrk_printed() -> None:
    with pytest.raises(ValueError, match="unable to connect"):
        parse_wrk_output("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_wrk_script_escapes_bodies_and_cycles_requests() -> None:
    body = '{"content":"a \\"quoted\\" ]] word\\n"}'
    single = wrk_script([HttpRequestSpec("POST", "/v1/chat/completions", body)], {"A": "b"})
    assert 'wrk.method = "POST"' in single
    assert 'wrk.headers["A"] = "b"' in single
    assert "request = function" not in single  # one fixed request: wrk's fast path
    assert "\\034content\\034" in single  # quotes as Lua decimal escapes
    assert "done = function(summary, latency, requests)" in single
    many = wrk_script([HttpRequestSpec("PUT", f"/k{i}", "{}") for i in range(3)], {})
    assert "request = function" in many
    assert many.count('{"PUT"') == 3


def test_loop_to_run_reports_ttfb_and_end_for_streams() -> None:
    loop = LoopResult(
        elapsed_s=2.0,
        latencies_ms=[10.0, 20.0, 30.0],
        ttfb_ms=[1.0, 2.0, 3.0],
        errors={"http_502": 1},
        cpu_s=0.004,
    )
    run = loop_to_run("stream_gateway", 1, loop, STREAM_CLIENT)
    assert run.requests == 3
    assert run.errors == 1
    assert run.rps == 1.5
    assert run.ttfb_ms is not None and run.ttfb_ms["p50"] == 2.0
    assert run.end_ms is not None and run.end_ms["p50"] == 20.0
    assert run.client["cpu_us_per_request"] == 1000.0


async def test_round_robin_spreads_calls_over_replicas_in_turn() -> None:
    seen: list[int] = []

    def to(replica: int) -> Any:
        async def call() -> CallOutcome:
            seen.append(replica)
            return CallOutcome()

        return call

    one_call = round_robin([to(1), to(2), to(3)])
    for _ in range(7):
        await one_call()
    assert seen == [1, 2, 3, 1, 2, 3, 1]
    single = to(9)
    assert round_robin([single]) is single


# --- reports ----------------------------------------------------------------------------------


def _run(scenario: str, c: int, rps: float, p50: float, p99: float, **extra: Any) -> dict[str, Any]:
    return {
        "scenario": scenario,
        "concurrency": c,
        "duration_s": 15.0,
        "requests": int(rps * 15),
        "rps": rps,
        "errors": extra.pop("errors", 0),
        "error_detail": {},
        "latency_ms": {"p50": p50, "p90": (p50 + p99) / 2, "p99": p99, "mean": p50, "max": p99},
        "ttfb_ms": extra.pop("ttfb_ms", None),
        "end_ms": extra.pop("end_ms", None),
        "client": {"tool": "wrk", "cpu_s": 1.0, "cpu_us_per_request": 5.0},
        "services": extra.pop("services", {}),
    }


def _sample_results() -> dict[str, Any]:
    services = {
        "vault": {"cpu_s": 5.0, "cpu_ms_per_request": 0.2, "peak_rss_mib": 60.0},
        "router": {"cpu_s": 5.0, "cpu_ms_per_request": 0.2, "peak_rss_mib": 70.0},
        "gateway": {"cpu_s": 5.0, "cpu_ms_per_request": 0.2, "peak_rss_mib": 80.0},
    }
    runs = [
        _run("direct", 1, 12000, 0.08, 0.40),
        _run("direct", 64, 40000, 1.5, 3.0),
        _run("gateway", 1, 800, 0.9, 2.0, services=services),
        _run("gateway", 64, 1500, 40.0, 120.0, services=services),
        _run("router_grpc", 1, 900, 1.2, 2.4),
        _run(
            "stream_direct",
            1,
            50,
            18.0,
            20.0,
            ttfb_ms={"p50": 1.0, "p99": 2.0},
            end_ms={"p50": 18.0, "p99": 20.0},
        ),
        _run(
            "stream_gateway",
            1,
            45,
            19.0,
            23.0,
            ttfb_ms={"p50": 3.0, "p99": 5.0},
            end_ms={"p50": 19.0, "p99": 23.0},
        ),
    ]
    meta = {"started_at": "2026-11-23 13:00:00 UTC", "commit": "abc1234", "duration_s": 15}
    return derive(meta, runs, None)


def test_derive_computes_overheads_against_the_same_run() -> None:
    results = _sample_results()
    assert results["overhead"]["gateway"]["1"] == {"p50": 0.82, "p90": 1.21, "p99": 1.6}
    assert results["overhead"]["stream_gateway"]["1"]["ttfb"]["p50"] == 2.0
    assert results["upstream_headroom"] == {
        "direct_rps": 40000,
        "stack_rps": 1500,
        "ratio": 26.7,
    }
    assert results["memory"]["sum_mib"] == 210.0


def test_targets_say_met_missed_and_not_measured() -> None:
    rows = {row["figure"]: row["met"] for row in _sample_results()["targets"]}
    assert rows["gateway overhead at c=1, p50"] is True
    assert rows["router gRPC overhead at c=1, p50"] is False  # 1.12 ms
    assert rows["gateway throughput at c=64"] is True
    assert rows["gateway p99 at c=64"] is False  # 120 ms
    assert rows["streaming TTFB above direct at c=1 (p50)"] is False  # 2 ms
    assert rows["RSS of the three services under load (sum of peaks)"] is True
    assert rows["soak at c=16: RSS growth"] is None
    assert rows["fake upstream throughput / stack throughput"] is True


def test_vault_backends_are_ratios_against_sqlite_at_the_same_concurrency() -> None:
    runs = [
        _run("vault_resolve", 1, 400, 2.0, 5.0),
        _run("vault_resolve", 64, 800, 80.0, 100.0),
        _run("vault_resolve_pg1", 1, 200, 4.0, 10.0),
        _run(
            "vault_resolve_pg3",
            1,
            100,
            8.0,
            20.0,
            services={
                "vault": {"cpu_ms_per_request": 0.5},
                "vault.2": {"cpu_ms_per_request": 0.25},
                "vault.3": {"cpu_ms_per_request": 0.25},
                "postgresql": {"cpu_ms_per_request": 0.4, "xact_per_request": 3.0},
            },
        ),
        _run("vault_resolve_pg1", 64, 400, 160.0, 250.0, errors=3),
    ]
    results = derive({}, runs, None)
    rows = {(r["backend"], r["concurrency"]): r for r in results["vault_backends"]}
    assert list(rows) == [
        ("sqlite ×1", 1),
        ("postgresql ×1", 1),
        ("postgresql ×3", 1),
        ("sqlite ×1", 64),
        ("postgresql ×1", 64),
    ]
    assert rows[("sqlite ×1", 1)]["rps_ratio"] == 1.0
    assert rows[("postgresql ×3", 1)]["rps_ratio"] == 0.25
    assert rows[("postgresql ×1", 64)]["p99_ratio"] == 2.5
    # Every replica's CPU counts for the vault.
    assert rows[("postgresql ×3", 1)]["vault_cpu_ms"] == 1.0
    assert rows[("postgresql ×3", 1)]["xact_per_request"] == 3.0
    summary = summary_markdown(results)
    assert "| postgresql ×1 | 64 | 400 | 160.00 | 250.00 | 3 | 0.50 | 2.00 | 2.50 |" in summary
    # Without PostgreSQL runs there is no backend section.
    assert "by database backend" not in summary_markdown(_sample_results())


def test_write_results_writes_json_and_a_summary_table(tmp_path: Path) -> None:
    results = _sample_results()
    json_path, md_path = write_results(tmp_path / "run", results)
    assert json.loads(json_path.read_text())["overhead"]["gateway"]["64"]["p99"] == 117.0
    summary = md_path.read_text()
    assert "| figure | value | target | met? |" in summary
    assert "| gateway p99 at c=64 | 120.00 ms | ≤ 100 ms | **no** |" in summary
    assert "| gateway | 1 | 800 | 0.90 |" in summary
    assert summary == summary_markdown(results)


# --- settings and the stack's wiring ----------------------------------------------------------


def test_config_defaults_and_smoke_overrides() -> None:
    default = BenchConfig.from_env({})
    assert default.duration_s == 15.0
    assert default.concurrencies == (1, 16, 64)
    assert default.scenarios == ALL_SCENARIOS
    assert default.soak is False
    smoke = BenchConfig.from_env(
        {"BENCH_DURATION": "2", "BENCH_CONCURRENCY": "1", "BENCH_SCENARIOS": "stream_direct,direct"}
    )
    assert smoke.duration_s == 2.0
    assert smoke.warmup_s == 1.0
    assert smoke.scenarios == ("direct", "stream_direct")
    assert smoke.needs_stack is False
    with pytest.raises(ValueError, match="BENCH_SCENARIOS"):
        BenchConfig.from_env({"BENCH_SCENARIOS": "nope"})
    with pytest.raises(ValueError, match="BENCH_CONCURRENCY"):
        BenchConfig.from_env({"BENCH_CONCURRENCY": "0"})


def test_config_vault_on_postgresql_adds_a_run_per_replica_count() -> None:
    assert BenchConfig.from_env({}).vault_pg_scenarios == ()
    server = "postgresql://postgres@127.0.0.1:5432/postgres"
    config = BenchConfig.from_env({"BENCH_VAULT_POSTGRES": server})
    assert config.vault_replicas == (1, 3)
    assert config.vault_pg_scenarios == ("vault_resolve_pg1", "vault_resolve_pg3")
    assert server not in repr(config)
    # Only with vault_resolve selected: the PostgreSQL runs are beside the SQLite one.
    no_resolve = BenchConfig.from_env({"BENCH_VAULT_POSTGRES": server, "BENCH_SCENARIOS": "direct"})
    assert no_resolve.vault_pg_scenarios == ()
    two = BenchConfig.from_env({"BENCH_VAULT_POSTGRES": server, "BENCH_VAULT_REPLICAS": "2"})
    assert two.vault_pg_scenarios == ("vault_resolve_pg2",)
    with pytest.raises(ValueError, match="BENCH_VAULT_POSTGRES"):
        BenchConfig.from_env({"BENCH_VAULT_POSTGRES": "/var/lib/vault.db"})


def test_bench_database_url_keeps_the_server_and_hides_the_password() -> None:
    server = "postgresql://bench:s3cret@db.example:6432/postgres?sslmode=require"
    url = database_url(server, "aicreds_bench_0a1b")
    assert url == "postgresql://bench:s3cret@db.example:6432/aicreds_bench_0a1b?sslmode=require"
    assert (
        redacted(url) == "postgresql://bench:***@db.example:6432/aicreds_bench_0a1b?sslmode=require"
    )
    assert redacted("postgresql://postgres@127.0.0.1/x") == "postgresql://postgres@127.0.0.1/x"


def test_stack_environment_wires_services_and_drops_stray_settings(tmp_path: Path) -> None:
    env = stack_environment(
        tmp_path,
        {"vault": 1, "router": 2, "gateway": 3},
        {"PATH": "/bin", "GATEWAY_RATE_LIMIT": "1", "BENCH_ENV_GATEWAY_LOG_LEVEL": "WARNING"},
    )
    assert env["ROUTER_VAULT_ADDR"] == env["VAULT_LISTEN"] == "127.0.0.1:1"
    assert env["GATEWAY_ROUTER_ADDR"] == "127.0.0.1:2"
    assert env["GATEWAY_RATE_LIMIT"] == "1000000"
    assert env["GATEWAY_LOG_LEVEL"] == "WARNING"
    assert env["ROUTER_EGRESS_ALLOW"] == "127.0.0.1"
    assert env["STATE_DIR"] == str(tmp_path)


def test_provider_body_uses_a_placeholder() -> None:
    body = provider_body("http://127.0.0.1:9")
    assert body["headers"] == {"Authorization": ["Bearer {{credential:openai_api_key}}"]}
    assert body["base_url"] == "http://127.0.0.1:9/v1"


def test_user_id_from_debug_header() -> None:
    assert _user_id_from_debug('{"method":"bearer","user_id":"u1"}') == "u1"
    header = "result=ok; method=bearer; token_prefix=sk-aic-A; user_id=u2; scopes=a:b,llm:invoke"
    assert _user_id_from_debug(header) == "u2"
    assert _user_id_from_debug("") is None


def test_proc_parsers() -> None:
    stat = "1234 (python (x) y) S 1 1234 1234 0 -1 4194560 1 0 0 0 250 50 0 0 20 0 3 0 1 2 3"
    assert parse_stat_cpu_ticks(stat) == (300, 1)
    status = "Name:\tpython\nVmHWM:\t  81920 kB\nVmRSS:\t  40960 kB\n"
    assert parse_status_kib(status, "VmHWM") == 81920
    assert parse_status_kib(status, "VmSwap") == 0


# --- the fake upstream, one request of each kind -----------------------------------------------


@pytest.fixture
async def upstream_url() -> AsyncIterator[str]:
    config = fake_upstream.UpstreamConfig(chunks=3, interval_ms=0.0, expected_auth=b"Bearer k")
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: fake_upstream._Connection(config), host="127.0.0.1", port=0
    )
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


async def test_fake_upstream_answers_json_sse_and_refuses_a_wrong_key(upstream_url: str) -> None:
    good = {"Authorization": "Bearer k"}
    async with httpx.AsyncClient(base_url=upstream_url) as client:
        plain = await client.post("/v1/chat/completions", json={"model": "m"}, headers=good)
        assert plain.status_code == 200
        assert plain.json()["object"] == "chat.completion"
        # The same keep-alive connection serves the stream next.
        stream = await client.post(
            "/v1/chat/completions", json={"model": "m", "stream": True}, headers=good
        )
        assert stream.headers["content-type"] == "text/event-stream"
        events = [e for e in stream.text.split("\n\n") if e]
        assert len(events) == 4 and events[-1] == "data: [DONE]"
        wrong = await client.post(
            "/v1/chat/completions", json={"model": "m"}, headers={"Authorization": "Bearer x"}
        )
        assert wrong.status_code == 401
        assert (await client.get("/healthz")).text == "ok"


def test_parse_collapsed_counts_self_and_inclusive_samples() -> None:
    lines = [
        "process 1:python;main (a.py);handle (b.py);encrypt (c.py) 6\n",
        "process 1:python;main (a.py);handle (b.py) 3\n",
        "process 1:python;main (a.py);log (d.py);handle (b.py) 1\n",
        "garbage\n",
    ]
    self_counts, inclusive, total = parse_collapsed(lines)
    assert total == 10
    assert self_counts["encrypt (c.py)"] == 6
    assert self_counts["handle (b.py)"] == 4
    assert inclusive["main (a.py)"] == 10
    assert inclusive["handle (b.py)"] == 10  # counted once per stack, even when recursive
