"""`python -m bench` (`make bench`): benchmark aicreds against a fast local fake upstream.

Settings are `BENCH_*` environment variables (see bench.config.BenchConfig and bench/README.md),
e.g. a quick smoke run: `BENCH_DURATION=2 BENCH_CONCURRENCY=1 make bench`.
Exit status: 0 when every selected scenario ran, 1 when the stack or a scenario could not.
"""

from __future__ import annotations

import asyncio
import os
import sys

from bench.config import BenchConfig
from bench.runner import run_bench


def main() -> int:
    try:
        config = BenchConfig.from_env(os.environ)
    except ValueError as err:
        print(f"bench: {err}", file=sys.stderr)
        return 2
    results, _ = asyncio.run(run_bench(config))
    meta = results["meta"]
    if meta.get("stack_error") or meta.get("skipped"):
        print("bench: some scenarios did not run; see 'skipped' in results.json", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
