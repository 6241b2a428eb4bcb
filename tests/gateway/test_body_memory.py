"""A large model-call body does not balloon a real gateway process's memory (SPEC 3.5).

The gateway reads `model` and `stream` without building the body: 20 MiB of small objects,
which `json.loads` turns into several hundred MiB, must leave the process's peak RSS well
inside its container limit (512 MiB in deploy/k8s/gateway.yaml).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import httpx

from services.common.callers import write_private_file
from tests.support.stack import Stack

MIB = 1024 * 1024


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


async def test_a_20_mib_body_of_small_objects_leaves_rss_bounded(
    tmp_path: Path, stack: Stack
) -> None:
    minted = await stack.mint("alice")
    state = tmp_path / "gateway-process-state"
    write_private_file(state / "gateway-vault.token", stack.vault.token("gateway"))
    write_private_file(state / "gateway-router.token", "svc-unused")
    port = _free_port()
    env = {
        **os.environ,
        "STATE_DIR": str(state),
        "GATEWAY_LISTEN": f"127.0.0.1:{port}",
        "GATEWAY_VAULT_ADDR": stack.vault.address,
        "GATEWAY_ROUTER_ADDR": f"127.0.0.1:{_free_port()}",  # absent: the call fails after
        "GATEWAY_ROUTER_TIMEOUT": "2",  # the body was read, which is what is measured
        "GATEWAY_LOG_LEVEL": "WARNING",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.gateway.server", env=env
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            for _ in range(200):
                try:
                    if (await client.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
            else:
                raise AssertionError("the gateway process did not come up")
            headers = {**minted.bearer(), "content-type": "application/json"}
            # Warm up (imports, channels) so that the baseline is the process at work.
            small = await client.post(
                "/v1/chat/completions", headers=headers, content=b'{"model":"m","messages":[]}'
            )
            assert small.status_code >= 500  # authenticated, body read, router absent
            baseline = _memory_kib(process.pid, "VmHWM")

            item = b'{"a":1}'
            count = 20 * MIB // (len(item) + 1)
            body = b'{"model":"m","messages":[' + b",".join([item] * count) + b"]}"
            big = await client.post("/v1/chat/completions", headers=headers, content=body)
            assert big.status_code >= 500, big.text  # read, parsed, then no router
            peak = _memory_kib(process.pid, "VmHWM")
            invalid = await client.post("/v1/chat/completions", headers=headers, content=body[:-1])
            assert invalid.status_code == 400
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 20)
    growth_mib = (peak - baseline) / 1024
    assert growth_mib < 150, f"peak RSS grew by {growth_mib:.0f} MiB for a 20 MiB body"
