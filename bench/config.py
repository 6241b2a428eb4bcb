"""The bench's settings, read once from `BENCH_*` environment variables."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from services.common.settings import env_bool, env_float, env_int, env_str

ALL_SCENARIOS = (
    "direct",
    "gateway",
    "router_grpc",
    "vault_resolve",
    "stream_direct",
    "stream_gateway",
    "rest_put",
    "rest_get",
)
# Scenarios that need no service: the fake upstream alone.
UPSTREAM_ONLY = ("direct", "stream_direct")
RESULTS_ROOT = Path(__file__).resolve().parent / "results"


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
    BENCH_RESULTS_DIR   where `<timestamp>/` folders go (default bench/results)
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
    results_root: Path = RESULTS_ROOT

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
            results_root=Path(env_str(environ, "BENCH_RESULTS_DIR", str(RESULTS_ROOT))),
        )
