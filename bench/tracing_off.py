"""What tracing costs when it is off, measured on the hooks themselves (`BENCH_TRACING=true`).

A throughput or latency difference of well under 1 % is below what this shared 2-core machine
can resolve between two runs, so the off path is timed directly: the very functions and tests
that a model call through the gateway runs when no OTLP endpoint is set, each timed with
`timeit` in the bench process (which never turns tracing on), times how often one buffered call
runs it (an authentication cache hit):

- `tracing.current_trace_ids()`: once per JSON log line (the gateway's access line, the
  router's access and upstream lines, the vault's access line): 4;
- the read of `tracing.active` in each gRPC call's metadata (gateway → router → vault): 2;
- a `tracer is None` test at the start and the end of each span that would be: the gateway's
  request, the router's RPC, the vault's RPC and the upstream request: 8.
"""

from __future__ import annotations

import timeit
from typing import Any

from services.common import tracing

HOOKS_PER_CALL = {"log_line": 4, "channel_call": 2, "none_test": 8}
_NUMBER = 200_000


def _best_ns(statement: str, namespace: dict[str, Any]) -> float:
    """The best of 5 timings of `statement`, in ns per execution."""
    times = timeit.repeat(statement, globals=namespace, number=_NUMBER, repeat=5)
    return min(times) / _NUMBER * 1e9


def off_path_cost() -> dict[str, Any]:
    """ns per hook and per model call with tracing off (`tracing.active` must be False)."""
    if tracing.active:
        raise RuntimeError("tracing is on in the bench process")
    empty = _best_ns("pass", {})
    per_hook = {
        "log_line": _best_ns(
            "current_trace_ids()", {"current_trace_ids": tracing.current_trace_ids}
        ),
        "channel_call": _best_ns("tracing.active", {"tracing": tracing}),
        "none_test": _best_ns("tracer is not None", {"tracer": None}),
    }
    per_hook = {name: round(max(0.0, ns - empty), 1) for name, ns in per_hook.items()}
    per_call = sum(per_hook[name] * count for name, count in HOOKS_PER_CALL.items())
    return {"ns_per_hook": per_hook, "hooks_per_call": HOOKS_PER_CALL, "ns_per_call": per_call}
