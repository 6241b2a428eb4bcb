"""gRPC's process-wide options (`services.common.grpc_runtime`), each checked in a fresh
interpreter: gRPC reads them once, when it is imported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from services.common.grpc_runtime import GRPC_EXPERIMENTS

ROOT = Path(__file__).resolve().parents[2]

# Runs unary calls on a grpc.aio server of its own, then prints the CPU ticks of gRPC's
# EventEngine threads: on the older I/O path they do no socket work.
_CALLS = """
import asyncio, os, sys
import services  # first, as every entry point does
import grpc, grpc.aio

async def main() -> None:
    server = grpc.aio.server()
    async def echo(request: bytes, context: object) -> bytes:
        return request

    handler = grpc.unary_unary_rpc_method_handler(echo)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("t.T", {"Echo": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    echo = channel.unary_unary("/t.T/Echo")
    for _ in range(3000):
        assert await echo(b"x" * 100, timeout=10) == b"x" * 100
    ticks = 0  # counted while the threads live (they may go with the server and channel)
    for task in os.listdir("/proc/self/task"):
        if open(f"/proc/self/task/{task}/comm").read().strip() == "event_engine":
            fields = open(f"/proc/self/task/{task}/stat").read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
    await channel.close()
    await server.stop(None)
    print(f"{os.environ.get('GRPC_EXPERIMENTS', '<unset>')}|{ticks}")

asyncio.run(main())
"""


def _run(code: str, experiments: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "GRPC_EXPERIMENTS"}
    if experiments is not None:
        env["GRPC_EXPERIMENTS"] = experiments
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_importing_a_service_sets_our_default_unless_the_operator_set_one() -> None:
    code = "import os, services.router.server; print(os.environ.get('GRPC_EXPERIMENTS'))"
    assert _run(code, None) == GRPC_EXPERIMENTS
    assert _run(code, "") == ""  # empty: gRPC's own defaults
    assert _run(code, "tcp_rcv_lowat") == "tcp_rcv_lowat"


def test_with_our_default_grpcs_event_engine_threads_do_no_socket_work() -> None:
    ours, ours_ticks = _run(_CALLS, None).split("|")
    defaults, default_ticks = _run(_CALLS, "").split("|")
    assert (ours, defaults) == (GRPC_EXPERIMENTS, "")
    # 3000 calls: with gRPC's defaults those threads read and write every socket (about 20
    # ticks of 10 ms here); with ours they stay idle. Not a timing: work done, counted.
    assert int(default_ticks) >= 5, default_ticks
    assert int(ours_ticks) <= 1, ours_ticks
