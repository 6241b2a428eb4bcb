"""One bench: start everything, check each path answers, run every scenario, write the results.

Each measured run is preceded by a warm-up of the same load (discarded); around it the bench
reads every service's CPU time and resets then reads its peak RSS, and samples RSS twice a
second. A scenario whose first request fails is skipped with the reason in results.json, so
that a half-built stack still yields the figures that can be measured.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from bench import procstats
from bench.config import (
    DIRECT_DISK,
    DISK_CONCURRENCY,
    GATEWAY_DISK,
    PEER_OF,
    PEER_SCENARIOS,
    PEER_STREAM,
    TRACED_SCENARIO,
    VAULT_PG_SCENARIO,
    BenchConfig,
)
from bench.disk_writer import DiskWriter
from bench.fake_upstream import UpstreamConfig
from bench.latency_client import client_spec, run_client
from bench.load import (
    HttpRequestSpec,
    RunResult,
    attach_uncorrected,
    closed_loop,
    ensure_wrk,
    loop_to_run,
    round_robin,
    router_invoke_call,
    run_wrk,
    streams_to_run,
    vault_resolve_call,
    wrk_script,
    wrk_to_run,
)
from bench.stack import (
    BENCH_MODEL,
    CREDENTIAL_KEY,
    Stack,
    StackError,
    Upstream,
    new_upstream_key,
    prepare_user,
    start_stack,
    start_upstream,
)
from bench.stats import rss_growth_pct

if TYPE_CHECKING:
    from bench.peer import Peer

CHAT_PATH = "/v1/chat/completions"
CHAT_BODY = json.dumps(
    {"model": BENCH_MODEL, "messages": [{"role": "user", "content": "Say hello to the bench."}]},
    separators=(",", ":"),
)
STREAM_BODY = json.dumps(
    {
        "model": BENCH_MODEL,
        "stream": True,
        "messages": [{"role": "user", "content": "Say hello to the bench."}],
    },
    separators=(",", ":"),
)
REST_KEYS = 32
MIB = 1024.0


class ProcessSampler:
    """Samples the RSS of named process trees every `interval` s while a run is going."""

    def __init__(self, pids: dict[str, int], interval: float = 0.5) -> None:
        self._pids = pids
        self._interval = interval
        self._task: asyncio.Task[None] | None = None
        self._t0 = 0.0
        self.timeline: list[dict[str, Any]] = []
        self.peak_mib: dict[str, float] = {}

    def _sample(self) -> None:
        point: dict[str, float] = {}
        for name, pid in self._pids.items():
            rss = procstats.snapshot(pid).rss_kib / MIB
            point[name] = round(rss, 1)
            self.peak_mib[name] = max(self.peak_mib.get(name, 0.0), rss)
        self.timeline.append({"t": round(time.monotonic() - self._t0, 2), "rss_mib": point})

    async def _loop(self) -> None:
        while True:
            self._sample()
            await asyncio.sleep(self._interval)

    async def __aenter__(self) -> ProcessSampler:
        self._t0 = time.monotonic()
        self._task = asyncio.create_task(self._loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._sample()


RunFn = Callable[[int, float], Awaitable[RunResult]]


@dataclass
class Bench:
    """Everything one bench run holds."""

    config: BenchConfig
    out_dir: Path
    work_dir: Path
    wrk: str = ""
    upstream: Upstream | None = None
    upstream_key: str = field(default="", repr=False)
    stack: Stack | None = None
    runs: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    grpc_channels: dict[str, Any] = field(default_factory=dict)
    peak_reset_ok: bool = True
    # While a `vault_resolve_pg<N>` scenario runs: its own stack (N vaults on one PostgreSQL
    # database) and that database's counters (BenchDatabase.probe).
    pg_stack: Stack | None = None
    # BENCH_TRACING: what the traced stack sent to the OTLP sink (export requests, bytes).
    otlp_exports: dict[str, int] | None = None
    # BENCH_TRACING: the hooks' cost with tracing off (bench/tracing_off.py).
    tracing_off: dict[str, Any] | None = None
    pg_probe: Callable[[], Awaitable[dict[str, float]]] | None = None
    # What each wrk scenario sends, for the latency client's run after wrk's (uncorrected).
    http_loads: dict[str, dict[str, Any]] = field(default_factory=dict)
    # BENCH_PEER: LiteLLM while its scenarios run; what its log reported; the disk writers.
    peer: Peer | None = None
    peer_log: dict[str, Any] | None = None
    disk_writers: dict[str, dict[str, Any]] = field(default_factory=dict)

    # --- what each scenario sends ---------------------------------------------------------

    def _script(self, name: str, requests: list[HttpRequestSpec], headers: dict[str, str]) -> Path:
        # The script holds a token: it lives in the private work dir, not in the results.
        path = self.work_dir / f"{name}.lua"
        path.write_text(wrk_script(requests, headers))
        return path

    def _wrk_runner(
        self, scenario: str, url: str, requests: list[HttpRequestSpec], headers: dict[str, str]
    ) -> RunFn:
        script = self._script(scenario, requests, headers)
        target = urlsplit(url)
        self.http_loads[scenario] = client_spec(
            target.hostname or "127.0.0.1",
            target.port or 80,
            [(r.method, r.path, r.body) for r in requests],
            headers,
        )

        async def run(concurrency: int, duration: float) -> RunResult:
            report, cpu = await run_wrk(self.wrk, url, script, concurrency, duration)
            return wrk_to_run(scenario, concurrency, report, cpu)

        return run

    def _loop_runner(self, scenario: str, make_call: Callable[[int], Any], tool: str) -> RunFn:
        async def run(concurrency: int, duration: float) -> RunResult:
            one_call = make_call(concurrency)
            loop = await closed_loop(one_call, concurrency, duration)
            return loop_to_run(scenario, concurrency, loop, tool)

        return run

    def runner(self, scenario: str) -> RunFn:
        """The function that runs `scenario` once at a given concurrency and duration."""
        assert self.upstream is not None
        json_headers = {"Content-Type": "application/json"}
        if scenario in PEER_SCENARIOS:
            return self._peer_runner(scenario)
        if scenario in ("direct", DIRECT_DISK):
            return self._wrk_runner(
                scenario,
                self.upstream.base_url,
                [HttpRequestSpec("POST", CHAT_PATH, CHAT_BODY)],
                {**json_headers, "Authorization": f"Bearer {self.upstream_key}"},
            )
        if scenario == "stream_direct":
            return self._stream_runner(
                scenario, f"{self.upstream.base_url}{CHAT_PATH}", self.upstream_key
            )
        if scenario.startswith(VAULT_PG_SCENARIO):
            pg_stack = self.pg_stack
            if pg_stack is None:
                raise StackError("the PostgreSQL vault stack is not running")
            return self._loop_runner(
                scenario, lambda c: self._resolve_call(pg_stack), "python grpc.aio"
            )
        stack = self.stack
        if stack is None:
            raise StackError("the stack is not running")
        user_headers = {**json_headers, "Authorization": f"Bearer {stack.user_token}"}
        # The same load, on whichever stack runs, with or without the disk writer.
        if scenario in ("gateway", TRACED_SCENARIO, GATEWAY_DISK):
            return self._wrk_runner(
                scenario,
                stack.gateway_url,
                [HttpRequestSpec("POST", CHAT_PATH, CHAT_BODY)],
                user_headers,
            )
        if scenario == "stream_gateway":
            return self._stream_runner(
                scenario, f"{stack.gateway_url}{CHAT_PATH}", stack.user_token
            )
        if scenario == "rest_put":
            return self._wrk_runner(
                scenario,
                stack.gateway_url,
                [
                    HttpRequestSpec(
                        "PUT",
                        f"/api/v2/users/me/ai-credentials/bench_rest_{i:02d}",
                        json.dumps({"value": f"bench-rest-value-{i:02d}-" + "x" * 40}),
                    )
                    for i in range(REST_KEYS)
                ],
                user_headers,
            )
        if scenario == "rest_get":
            return self._wrk_runner(
                scenario,
                stack.gateway_url,
                [HttpRequestSpec("GET", "/api/v2/users/me/ai-credentials")],
                {"Authorization": f"Bearer {stack.user_token}"},
            )
        if scenario == "router_grpc":
            return self._loop_runner(scenario, lambda c: self._router_call(), "python grpc.aio")
        if scenario == "vault_resolve":
            return self._loop_runner(
                scenario, lambda c: self._resolve_call(stack), "python grpc.aio"
            )
        raise ValueError(f"unknown scenario {scenario}")

    def _peer_runner(self, scenario: str) -> RunFn:
        """The peer's counterpart of `gateway`, `gateway_disk` or `stream_gateway`."""
        peer = self.peer
        if peer is None:
            raise StackError("the peer is not running")
        if scenario == PEER_STREAM:
            return self._stream_runner(scenario, f"{peer.base_url}{CHAT_PATH}", peer.master_key)
        return self._wrk_runner(
            scenario,
            peer.base_url,
            [HttpRequestSpec("POST", CHAT_PATH, CHAT_BODY)],
            {"Content-Type": "application/json", "Authorization": f"Bearer {peer.master_key}"},
        )

    def _stream_runner(self, scenario: str, url: str, token: str) -> RunFn:
        """Streams to `url`, from the latency client in its own process (the same client for
        every streaming scenario, ours and the peer's)."""
        target = urlsplit(url)
        spec = client_spec(
            target.hostname or "127.0.0.1",
            target.port or 80,
            [("POST", target.path, STREAM_BODY)],
            {"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
            stream=True,
        )

        async def run(concurrency: int, duration: float) -> RunResult:
            client = await run_client(self.work_dir, scenario, spec, concurrency, duration)
            return streams_to_run(scenario, concurrency, client)

        return run

    def _channel(self, addr: str) -> Any:
        """One channel per address for the whole bench (one HTTP/2 connection, as a client
        service would keep)."""
        import grpc

        if addr not in self.grpc_channels:
            self.grpc_channels[addr] = grpc.aio.insecure_channel(addr)
        return self.grpc_channels[addr]

    def _router_call(self) -> Any:
        from aicreds.router.v1 import router_pb2, router_pb2_grpc

        assert self.stack is not None
        stub = router_pb2_grpc.RouterServiceStub(self._channel(self.stack.router_addr))
        request = router_pb2.InvokeRequest(
            user_id=self.stack.user_id,
            model=BENCH_MODEL,
            method="POST",
            path="/chat/completions",
            headers=[router_pb2.Header(name="content-type", value="application/json")],
            body=CHAT_BODY.encode(),
        )
        metadata = (("authorization", f"Bearer {self.stack.agent_token}"),)
        return router_invoke_call(stub, request, metadata)

    def _resolve_call(self, stack: Stack) -> Any:
        """`Resolve` on the stack's vault, or round-robin over its vault replicas."""
        from aicreds.vault.v1 import credentials_pb2, credentials_pb2_grpc

        request = credentials_pb2.ResolveRequest(user_id=stack.user_id, model=BENCH_MODEL)
        metadata = (("authorization", f"Bearer {stack.resolver_token}"),)
        calls = [
            vault_resolve_call(
                credentials_pb2_grpc.CredentialServiceStub(self._channel(addr)), request, metadata
            )
            for addr in stack.vault_addrs or [stack.vault_addr]
        ]
        return round_robin(calls)

    # --- measuring --------------------------------------------------------------------------

    def service_pids(self, scenario: str = "") -> dict[str, int]:
        if scenario in PEER_SCENARIOS and self.peer is not None:
            # A peer run: LiteLLM (its process tree) and the fake upstream; our stack idles.
            peer_pids = {"litellm": self.peer.pid}
            if self.upstream is not None:
                peer_pids["upstream"] = self.upstream.pids[0]
            return peer_pids
        if self.pg_stack is not None:
            # A PostgreSQL vault run: its vault replicas (its router and gateway stay idle).
            procs = self.pg_stack.procs
            return {name: procs[name].pid for name in procs if name.startswith("vault")}
        pids: dict[str, int] = {}
        if self.stack is not None:
            pids.update({name: self.stack.pid(name) for name in self.stack.procs})
        if self.upstream is not None:
            for i, pid in enumerate(self.upstream.pids):
                pids["upstream" if i == 0 else f"upstream.{i}"] = pid
        return pids

    async def measure(
        self, run: RunFn, scenario: str, concurrency: int, duration: float
    ) -> tuple[RunResult, ProcessSampler]:
        """Warm up, then one measured run with CPU and RSS of every service around it."""
        if self.config.warmup_s > 0:
            await run(concurrency, self.config.warmup_s)
        pids = self.service_pids(scenario)
        load_before = loadavg_1m()
        for pid in pids.values():
            self.peak_reset_ok &= procstats.reset_peak(pid)
        pg_before = await self._pg_counters()
        before = {name: procstats.snapshot(pid) for name, pid in pids.items()}
        async with ProcessSampler(pids) as sampler:
            result = await run(concurrency, duration)
        after = {name: procstats.snapshot(pid) for name, pid in pids.items()}
        # The calls the CPU above was spent on: this run's, before the latency client's run
        # (measured after it) adds its errors to the result.
        calls = result.requests + result.errors
        spec = self.http_loads.get(scenario)
        if spec is not None:
            # The same load again, right after wrk's run, timed per request (uncorrected).
            client = await run_client(self.work_dir, scenario, spec, concurrency, duration)
            attach_uncorrected(result, client)
        pg_after = await self._pg_counters()
        for name in pids:
            cpu = after[name].cpu_seconds - before[name].cpu_seconds
            result.services[name] = {
                "cpu_s": round(cpu, 3),
                "cpu_ms_per_request": round(cpu / calls * 1000, 4) if calls else 0.0,
                "peak_rss_mib": round(max(after[name].hwm_kib / MIB, sampler.peak_mib[name]), 1),
                "rss_end_mib": round(after[name].rss_kib / MIB, 1),
            }
        if pg_before is not None and pg_after is not None:
            delta = {k: pg_after[k] - pg_before[k] for k in pg_after}
            result.services["postgresql"] = {
                "cpu_s": round(delta["cpu_s"], 3),
                "cpu_ms_per_request": round(delta["cpu_s"] / calls * 1000, 4) if calls else 0.0,
                # Each statement outside a transaction block is a transaction of its own.
                "xact_per_request": round(delta["xact_commit"] / calls, 3) if calls else 0.0,
                "rows_inserted_per_request": (
                    round(delta["tup_inserted"] / calls, 3) if calls else 0.0
                ),
            }
        result.client["loadavg_1m_before_after"] = [load_before, loadavg_1m()]
        checked = self.pg_stack if scenario.startswith(VAULT_PG_SCENARIO) else self.stack
        if scenario in PEER_SCENARIOS and self.peer is not None:
            self.peer.check_alive()
        elif checked is not None:
            checked.check_alive()
        return result, sampler

    async def _pg_counters(self) -> dict[str, float] | None:
        """The PostgreSQL database's counters (BenchDatabase.probe), when one is in use."""
        return None if self.pg_probe is None else await self.pg_probe()

    async def first_call(self, scenario: str) -> str | None:
        """One call of the scenario; None when it succeeded, else why not."""
        try:
            result = await self.runner(scenario)(1, 0.3)
        except Exception as err:
            return f"{type(err).__name__}: {err}"[:500]
        if result.requests == 0:
            detail = ", ".join(f"{k}={v}" for k, v in result.error_detail.items()) or "no answer"
            return f"no successful call in 0.3 s ({detail})"
        return None

    async def run_all(self) -> None:
        config = self.config
        for scenario in config.scenarios:
            if scenario.startswith("stream_"):
                levels = config.stream_concurrencies
            elif scenario.startswith("rest_"):
                levels = (config.rest_concurrency,)
            else:
                levels = config.concurrencies
            # With BENCH_PEER, the peer's counterpart runs alternately with ours at each
            # concurrency, so that each pair compared is measured seconds apart.
            peer = [PEER_OF[scenario]] if self.peer and scenario in PEER_OF else []
            if scenario == "disk_writer":
                await self.run_with_disk_writer([DIRECT_DISK, GATEWAY_DISK, *peer])
                continue
            await self.run_scenarios([scenario, *peer], levels)
            if scenario == "gateway" and config.tracing:
                await self.run_traced_gateway()  # right after, so both see the same machine
            if scenario == "vault_resolve":
                # Right after the SQLite vault, so both sides see the same machine.
                for replicas in config.vault_replicas if config.vault_pg_scenarios else ():
                    await self.run_vault_postgres(replicas)

    def state_dir(self) -> Path:
        """The vault's state volume (where the disk writer writes)."""
        return self.stack.state_dir if self.stack is not None else self.work_dir

    async def run_with_disk_writer(self, scenarios: list[str]) -> None:
        """`scenarios` at c=1, alternately, while a process writes and syncs a file on the state
        volume."""
        print("bench: a competing disk writer runs on the state volume", flush=True)
        async with DiskWriter(self.state_dir()) as writer:
            await self.run_scenarios(scenarios, (DISK_CONCURRENCY,))
        self.disk_writers[",".join(scenarios)] = writer.report

    def start_peer(self) -> None:
        """Start the peer (BENCH_PEER) next to our stack; its scenarios are skipped, with the
        reason, when it does not start. Idle, it costs next to nothing (LiteLLM: 0.06 s of CPU
        in 30 s), so it stays up through the bench."""
        from bench.peer import start_peer

        assert self.upstream is not None
        print(f"bench: the peer, {self.config.peer}: starting", flush=True)
        try:
            self.peer = start_peer(
                self.work_dir, self.out_dir / "logs", self.upstream.base_url, self.upstream_key
            )
        except (StackError, OSError, subprocess.CalledProcessError) as err:
            why = f"{type(err).__name__}: {err}"[:500]
            for scenario in self.config.peer_scenarios:
                self.skipped.setdefault(scenario, why)
            print(f"bench: the peer did not start: {why}", flush=True)

    def stop_peer(self) -> None:
        peer, self.peer = self.peer, None
        if peer is not None:
            peer.stop()
            self.peer_log = peer.problems()

    async def run_vault_postgres(self, replicas: int) -> None:
        """`vault_resolve` against `replicas` vaults sharing one fresh PostgreSQL database."""
        from bench.vault_backends import BenchDatabase, PostgresError

        assert self.upstream is not None
        scenario = f"{VAULT_PG_SCENARIO}{replicas}"
        log_dir = self.out_dir / "logs" / scenario
        log_dir.mkdir(parents=True, exist_ok=True)
        print(f"bench: {scenario}: {replicas} vault(s) on a fresh PostgreSQL database", flush=True)
        try:
            async with BenchDatabase(self.config.vault_postgres) as database:
                env = {**os.environ, "BENCH_ENV_VAULT_DATABASE": database.url}
                stack = start_stack(self.work_dir / scenario, log_dir, env, replicas)
                try:
                    prepare_user(stack, self.upstream.base_url, self.upstream_key)
                    self.pg_stack, self.pg_probe = stack, database.probe
                    await self.run_scenario(scenario, self.config.concurrencies)
                finally:
                    self.pg_stack = self.pg_probe = None
                    await self.close_channels(stack.vault_addrs)
                    stack.stop()
        except (StackError, PostgresError) as err:
            why = f"{type(err).__name__}: {err}"[:500]
            self.skipped.setdefault(scenario, why)
            print(f"bench: {scenario} stopped: {why} (logs in {log_dir})", flush=True)

    async def run_traced_gateway(self) -> None:
        """`gateway` on a second stack whose services export traces to a local OTLP sink
        (`BENCH_TRACING`); the untraced stack stays up, idle, meanwhile."""
        from bench.otlp_sink import OtlpSink

        assert self.upstream is not None
        log_dir = self.out_dir / "logs" / TRACED_SCENARIO
        log_dir.mkdir(parents=True, exist_ok=True)
        print(f"bench: {TRACED_SCENARIO}: every service exports traces over OTLP", flush=True)
        untraced = self.stack
        with OtlpSink() as sink:
            env = {**os.environ, "BENCH_ENV_OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint}
            try:
                stack = start_stack(self.work_dir / TRACED_SCENARIO, log_dir, env)
                try:
                    prepare_user(stack, self.upstream.base_url, self.upstream_key)
                    self.stack = stack
                    await self.run_scenario(TRACED_SCENARIO, self.config.concurrencies)
                finally:
                    self.stack = untraced
                    stack.stop()  # each service sends what it still holds
            except StackError as err:
                why = f"{type(err).__name__}: {err}"[:500]
                self.skipped.setdefault(TRACED_SCENARIO, why)
                print(f"bench: {TRACED_SCENARIO} stopped: {why} (logs in {log_dir})", flush=True)
            self.otlp_exports = {"requests": sink.requests, "bytes": sink.bytes}
        if not sink.requests:
            self.skipped.setdefault(TRACED_SCENARIO, "no span reached the OTLP sink")
        from bench.tracing_off import off_path_cost

        self.tracing_off = off_path_cost()

    async def run_scenario(self, scenario: str, levels: tuple[int, ...]) -> None:
        """First call, then one measured run per concurrency; a failure skips the rest."""
        await self.run_scenarios([scenario], levels)

    async def run_scenarios(self, scenarios: list[str], levels: tuple[int, ...]) -> None:
        """Each scenario's first call, then at each concurrency one measured run of each, in
        turn; a failure skips the rest of that scenario."""
        runnable: dict[str, RunFn] = {}
        for scenario in scenarios:
            why = await self.first_call(scenario)
            if why is not None:
                self.skipped[scenario] = why
                print(f"bench: skipping {scenario}: {why}", flush=True)
                continue
            runnable[scenario] = self.runner(scenario)
        for concurrency in levels:
            for scenario, run in list(runnable.items()):
                await self._measure_and_keep(run, scenario, concurrency, runnable)

    async def _measure_and_keep(
        self, run: RunFn, scenario: str, concurrency: int, runnable: dict[str, RunFn]
    ) -> None:
        try:
            result, _ = await self.measure(run, scenario, concurrency, self.config.duration_s)
        except StackError:
            raise
        except Exception as err:  # one broken scenario must not lose the others
            why = f"c={concurrency}: {type(err).__name__}: {err}"[:500]
            self.skipped[scenario] = why
            print(f"bench: {scenario} failed at {why}", flush=True)
            runnable.pop(scenario, None)
            return
        self.runs.append(result.as_dict())
        lat = result.latency_ms or {}
        p50, p99 = lat.get("p50", float("nan")), lat.get("p99", float("nan"))
        print(
            f"bench: {scenario:15s} c={concurrency:<3d} {result.rps:9.1f} req/s  "
            f"p50 {p50:7.2f}  p99 {p99:7.2f} ms  errors {result.errors}",
            flush=True,
        )

    async def soak(self) -> dict[str, Any] | None:
        """The gateway at the soak concurrency for the soak duration; RSS growth and errors."""
        config = self.config
        if self.stack is None:
            self.skipped["soak"] = "the stack is not running"
            return None
        why = await self.first_call("gateway")
        if why is not None:
            self.skipped["soak"] = why
            return None
        run = self.runner("gateway")
        print(
            f"bench: soak through the gateway, c={config.soak_concurrency}, "
            f"{config.soak_duration_s:.0f} s",
            flush=True,
        )
        # A warm-up as long as a normal run, so that caches and pools are full before t=0.
        await run(config.soak_concurrency, max(config.warmup_s, config.duration_s))
        pids = {n: self.stack.pid(n) for n in self.stack.procs}
        async with ProcessSampler(pids, interval=1.0) as sampler:
            result = await run(config.soak_concurrency, config.soak_duration_s)
        self.stack.check_alive()
        totals = [sum(p["rss_mib"].values()) for p in sampler.timeline]
        start, end, growth = rss_growth_pct(totals)
        return {
            "concurrency": config.soak_concurrency,
            "duration_s": round(result.duration_s, 1),
            "requests": result.requests,
            "rps": round(result.rps, 1),
            "errors": result.errors,
            "error_detail": result.error_detail,
            "latency_ms": result.latency_ms,
            "rss_start_mib": round(start, 1),
            "rss_end_mib": round(end, 1),
            "rss_growth_pct": round(growth, 2),
            "timeline": sampler.timeline,
        }

    async def profile(self) -> dict[str, Any] | None:
        """py-spy on every service under `BENCH_PROFILE_SCENARIO`'s load; not one of the figures."""
        from bench import profiling

        tool = profiling.py_spy()
        if tool is None:
            self.skipped["profile"] = "py-spy is not installed (pip install -e '.[bench]')"
            return None
        if self.stack is None:
            self.skipped["profile"] = "the stack is not running"
            return None
        scenario = self.config.profile_scenario
        concurrency = self.config.profile_concurrency
        why = await self.first_call(scenario)
        if why is not None:
            self.skipped["profile"] = why
            return None
        run = self.runner(scenario)
        await run(concurrency, self.config.warmup_s or 1.0)
        pids = {n: self.stack.pid(n) for n in self.stack.procs}
        duration = self.config.duration_s
        print(f"bench: profiling the services under {scenario} load, c={concurrency}", flush=True)
        recorders = profiling.start(tool, pids, duration, self.out_dir)
        await asyncio.sleep(0.5)  # py-spy attaches before the load starts
        result = await run(concurrency, duration)
        services = await asyncio.to_thread(profiling.finish, recorders, duration + 30)
        return {
            "scenario": scenario,
            "concurrency": concurrency,
            "rps_while_profiled": round(result.rps, 1),
            "services": services,
        }

    async def close_channels(self, addrs: list[str] | None = None) -> None:
        """Close the channels to `addrs` (default: all of them)."""
        for addr in list(self.grpc_channels) if addrs is None else addrs:
            channel = self.grpc_channels.pop(addr, None)
            if channel is not None:
                await channel.close()


def loadavg_1m() -> float | None:
    """The 1-minute load average: how busy the machine was (other people's tests?)."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _git_commit(repo: Path) -> str:
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit


def meta_for(config: BenchConfig, wrk: str, started: datetime) -> dict[str, Any]:
    try:
        loadavg = Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        loadavg = []
    return {
        "started_at": started.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "commit": _git_commit(Path(__file__).resolve().parent.parent),
        "duration_s": config.duration_s,
        "warmup_s": round(config.warmup_s, 2),
        "concurrencies": list(config.concurrencies),
        "stream_concurrencies": list(config.stream_concurrencies),
        "rest_concurrency": config.rest_concurrency,
        "scenarios": list(config.scenarios),
        "upstream_workers": config.upstream_workers,
        "stream_chunks": config.stream_chunks,
        "stream_interval_ms": config.stream_interval_ms,
        "cpus": os.cpu_count(),
        "loadavg_start": " ".join(loadavg),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "wrk": wrk,
        "load_generator_why": (
            "wrk: C, event-driven, a few µs of CPU per request (throughput, corrected "
            "percentiles); "
            "bench.latency_client: ~10-15 µs per request, ns timestamps (uncorrected percentiles)"
        ),
    }


async def run_bench(config: BenchConfig) -> tuple[dict[str, Any], Path]:
    """Run the whole bench; returns the results document and the folder it was written to."""
    from bench.charts import write_charts
    from bench.report import derive, summary_markdown, write_results

    started = datetime.now(UTC)
    out_dir = config.results_root / started.strftime("%Y%m%dT%H%M%SZ")
    log_dir = out_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    wrk = ensure_wrk()
    meta = meta_for(config, wrk, started)
    with tempfile.TemporaryDirectory(prefix="aicreds-bench-") as tmp:
        work_dir = Path(tmp)
        os.chmod(work_dir, 0o700)
        bench = Bench(config=config, out_dir=out_dir, work_dir=work_dir, wrk=wrk)
        bench.upstream_key = new_upstream_key()
        upstream_config = UpstreamConfig(
            chunks=config.stream_chunks,
            interval_ms=config.stream_interval_ms,
            expected_auth=f"Bearer {bench.upstream_key}".encode(),
        )
        soak: dict[str, Any] | None = None
        profile: dict[str, Any] | None = None
        with (log_dir / "upstream.log").open("ab") as upstream_log:
            bench.upstream = start_upstream(upstream_config, config.upstream_workers, upstream_log)
        try:
            if config.needs_stack:
                try:
                    bench.stack = start_stack(work_dir / "state", log_dir, os.environ)
                    prepare_user(bench.stack, bench.upstream.base_url, bench.upstream_key)
                except StackError as err:
                    meta["stack_error"] = str(err)
                    print(f"bench: the stack did not start: {err} (logs in {log_dir})", flush=True)
            try:
                if config.peer_scenarios and bench.stack is not None:
                    bench.start_peer()
                await bench.run_all()
                bench.stop_peer()
                if config.profile:
                    profile = await bench.profile()
                if config.soak:
                    soak = await bench.soak()
            except StackError as err:
                meta["stack_error"] = str(err)
                print(f"bench: stopped early: {err} (logs in {log_dir})", flush=True)
        finally:
            bench.stop_peer()
            await bench.close_channels()
            if bench.stack is not None:
                bench.stack.stop()
            bench.upstream.stop()
    meta["skipped"] = bench.skipped
    meta["peak_rss_reset"] = bench.peak_reset_ok
    meta["credential_key"] = CREDENTIAL_KEY
    meta["otlp_exports"] = bench.otlp_exports
    meta["tracing_off"] = bench.tracing_off
    meta["disk_writers"] = bench.disk_writers
    meta["peer"] = config.peer or None
    meta["peer_log"] = bench.peer_log
    results = derive(meta, bench.runs, soak, profile)
    meta["charts"] = write_charts(out_dir, results)
    results["meta"] = meta
    write_results(out_dir, results)
    latest = config.results_root / "latest"
    try:
        if latest.is_symlink() or latest.exists():
            latest.unlink()
        latest.symlink_to(out_dir.name)
    except OSError:
        pass
    print()
    print(summary_markdown(results))
    print(f"bench: results in {out_dir}")
    return results, out_dir
