"""The bench's settings, read once from `BENCH_*` environment variables."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from services.common.settings import env_bool, env_float, env_int, env_str

# The runs `BENCH_PROFILE` can profile (through the gateway, so all three services are busy).
PROFILED_SCENARIOS = ("gateway", "stream_gateway")
ALL_SCENARIOS = (
    "direct",
    "gateway",
    "router_grpc",
    "vault_resolve",
    "stream_direct",
    "stream_gateway",
    "rest_put",
    "rest_get",
    "disk_writer",
)
# Scenarios that need no service: the fake upstream alone.
UPSTREAM_ONLY = ("direct", "stream_direct")
RESULTS_ROOT = Path(__file__).resolve().parent / "results"
# `vault_resolve` on PostgreSQL with N replicas is reported as this scenario name + N.
VAULT_PG_SCENARIO = "vault_resolve_pg"
# `gateway` with every service exporting traces (BENCH_TRACING=true) is reported as this.
TRACED_SCENARIO = "gateway_traced"
# `disk_writer`: `direct` and `gateway` at c=1 while a process writes and syncs a file on the
# state volume (bench.disk_writer), reported under these names.
DIRECT_DISK = "direct_disk"
GATEWAY_DISK = "gateway_disk"
DISK_CONCURRENCY = 1
# BENCH_PEER=litellm: the peer's runs of `gateway`, `stream_gateway` and `gateway_disk`.
PEERS = ("litellm",)
PEER = "litellm"
PEER_STREAM = "stream_litellm"
PEER_DISK = "litellm_disk"
PEER_SCENARIOS = (PEER, PEER_STREAM, PEER_DISK)
# Which of our scenarios each peer scenario is the counterpart of (it runs alternately with it).
PEER_OF = {"gateway": PEER, "stream_gateway": PEER_STREAM, "disk_writer": PEER_DISK}


def _int_list(environ: Mapping[str, str], name: str, default: tuple[int, ...]) -> tuple[int, ...]:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        values = tuple(int(part) for part in raw.replace(" ", "").split(",") if part)
    except ValueError:
        raise ValueError(f"{name} must be a comma-separated list of integers") from None
    if not values or any(v < 1 for v in values):
        raise ValueError(f"{name} must list integers >= 1")
    return values


@dataclass(frozen=True)
class BenchConfig:
    """What to run and for how long.

    BENCH_DURATION      seconds of each measured run (default 15)
    BENCH_WARMUP        seconds of warm-up before each run (default duration/3, 1..5)
    BENCH_CONCURRENCY   request/response concurrencies (default 1,16,64)
    BENCH_STREAM_CONCURRENCY  streaming concurrencies (default 1,16)
    BENCH_REST_CONCURRENCY    concurrency of the REST PUT/GET runs (default 16)
    BENCH_SCENARIOS     which scenarios (default all; e.g. `direct` needs no service)
    BENCH_SOAK          true: also the soak through the gateway (default false)
    BENCH_SOAK_DURATION seconds of the soak (default 600)
    BENCH_UPSTREAM_WORKERS  fake-upstream processes (default 1)
    BENCH_STREAM_CHUNKS, BENCH_STREAM_INTERVAL_MS  the fake SSE answer (default 16 events, 1 ms)
    BENCH_PROFILE       true: py-spy profiles of the services during one gateway run
    BENCH_PROFILE_SCENARIO  which run is profiled: `gateway` (default) or `stream_gateway`
    BENCH_PROFILE_CONCURRENCY  at which concurrency (default 16)
    BENCH_RESULTS_DIR   where `<timestamp>/` folders go (default bench/results)
    BENCH_VAULT_POSTGRES  a PostgreSQL server URL (e.g. postgresql://postgres@127.0.0.1:5432/
                        postgres): `vault_resolve` also runs with the vault on PostgreSQL, in a
                        fresh database the bench creates there and drops after (default unset)
    BENCH_VAULT_REPLICAS  vault processes sharing that database, one run each (default 1,3)
    BENCH_TRACING       true: `gateway` again, right after it, on a second stack whose services
                        export OpenTelemetry traces to a local OTLP sink (`gateway_traced`)
    BENCH_PEER          `litellm`: the same loads through LiteLLM's proxy (pinned in
                        bench/peer-requirements.txt), each run right after ours (default unset)
    """

    duration_s: float = 15.0
    warmup_s: float = 5.0
    concurrencies: tuple[int, ...] = (1, 16, 64)
    stream_concurrencies: tuple[int, ...] = (1, 16)
    rest_concurrency: int = 16
    scenarios: tuple[str, ...] = ALL_SCENARIOS
    soak: bool = False
    soak_duration_s: float = 600.0
    soak_concurrency: int = 16
    upstream_workers: int = 1
    stream_chunks: int = 16
    stream_interval_ms: float = 1.0
    profile: bool = False
    profile_scenario: str = "gateway"
    profile_concurrency: int = 16
    results_root: Path = RESULTS_ROOT
    vault_postgres: str = field(default="", repr=False)
    vault_replicas: tuple[int, ...] = (1, 3)
    tracing: bool = False
    peer: str = ""

    @property
    def peer_scenarios(self) -> tuple[str, ...]:
        """The peer's runs: those of ours that have a counterpart through it."""
        if not self.peer:
            return ()
        return tuple(peer for ours, peer in PEER_OF.items() if ours in self.scenarios)

    @property
    def vault_pg_scenarios(self) -> tuple[str, ...]:
        """The PostgreSQL runs of `vault_resolve`, one per replica count (none when unset)."""
        if not self.vault_postgres or "vault_resolve" not in self.scenarios:
            return ()
        return tuple(f"{VAULT_PG_SCENARIO}{n}" for n in self.vault_replicas)

    @property
    def needs_stack(self) -> bool:
        return self.soak or any(s not in UPSTREAM_ONLY for s in self.scenarios)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> BenchConfig:
        duration = env_float(environ, "BENCH_DURATION", cls.duration_s)
        if duration < 1:
            raise ValueError("BENCH_DURATION must be at least 1 (seconds)")
        warmup = env_float(environ, "BENCH_WARMUP", min(5.0, max(1.0, duration / 3)))
        raw_scenarios = env_str(environ, "BENCH_SCENARIOS", ",".join(ALL_SCENARIOS))
        scenarios = tuple(s.strip() for s in raw_scenarios.split(",") if s.strip())
        unknown = [s for s in scenarios if s not in ALL_SCENARIOS]
        if unknown:
            raise ValueError(
                f"BENCH_SCENARIOS: unknown {', '.join(unknown)}; known: {', '.join(ALL_SCENARIOS)}"
            )
        # Keep the canonical order whatever order they were named in.
        scenarios = tuple(s for s in ALL_SCENARIOS if s in scenarios)
        profile_scenario = env_str(environ, "BENCH_PROFILE_SCENARIO", "gateway").strip()
        if profile_scenario not in PROFILED_SCENARIOS:
            raise ValueError(
                f"BENCH_PROFILE_SCENARIO: {profile_scenario!r} is not one of "
                f"{', '.join(PROFILED_SCENARIOS)}"
            )
        vault_postgres = env_str(environ, "BENCH_VAULT_POSTGRES", "").strip()
        if vault_postgres and not vault_postgres.startswith(("postgresql://", "postgres://")):
            raise ValueError("BENCH_VAULT_POSTGRES must be a postgresql:// URL")
        peer = env_str(environ, "BENCH_PEER", "").strip().lower()
        if peer and peer not in PEERS:
            raise ValueError(f"BENCH_PEER must be one of: {', '.join(PEERS)}")
        return cls(
            duration_s=duration,
            warmup_s=max(0.0, warmup),
            concurrencies=_int_list(environ, "BENCH_CONCURRENCY", cls.concurrencies),
            stream_concurrencies=_int_list(
                environ, "BENCH_STREAM_CONCURRENCY", cls.stream_concurrencies
            ),
            rest_concurrency=max(1, env_int(environ, "BENCH_REST_CONCURRENCY", 16)),
            scenarios=scenarios,
            soak=env_bool(environ, "BENCH_SOAK", False),
            soak_duration_s=env_float(environ, "BENCH_SOAK_DURATION", cls.soak_duration_s),
            upstream_workers=max(1, env_int(environ, "BENCH_UPSTREAM_WORKERS", 1)),
            stream_chunks=max(1, env_int(environ, "BENCH_STREAM_CHUNKS", 16)),
            stream_interval_ms=max(0.0, env_float(environ, "BENCH_STREAM_INTERVAL_MS", 1.0)),
            profile=env_bool(environ, "BENCH_PROFILE", False),
            profile_scenario=profile_scenario,
            profile_concurrency=max(1, env_int(environ, "BENCH_PROFILE_CONCURRENCY", 16)),
            results_root=Path(env_str(environ, "BENCH_RESULTS_DIR", str(RESULTS_ROOT))),
            vault_postgres=vault_postgres,
            vault_replicas=_int_list(environ, "BENCH_VAULT_REPLICAS", cls.vault_replicas),
            tracing=env_bool(environ, "BENCH_TRACING", False),
            peer=peer,
        )
