"""`aicreds-gateway` as a process: settings from the environment, uvicorn with uvloop and
httptools, JSON log lines on stderr, clean exit on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path

import httpx

from services.common.callers import write_private_file
from tests.support.stack import Stack


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_gateway_process_serves_and_stops_on_sigterm(tmp_path: Path, stack: Stack) -> None:
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
        "GATEWAY_COOKIE_SECURE": "false",
        "GATEWAY_LOG_LEVEL": "INFO",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.gateway.server",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            for _ in range(200):
                try:
                    if (await client.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
            else:
                raise AssertionError("the gateway process did not come up")
            response = await client.put(
                "/api/v2/users/me/ai-credentials/k",
                headers=minted.bearer(),
                json={"value": "process-secret-value"},
            )
            assert response.status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.stderr is not None
        stderr = (await asyncio.wait_for(process.stderr.read(), 20)).decode()
        code = await asyncio.wait_for(process.wait(), 20)
    # uvicorn shuts down gracefully, then re-raises the signal it caught (so -SIGTERM).
    assert code in (0, -signal.SIGTERM)
    assert "Traceback" not in stderr
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    access = [line for line in lines if line.get("logger") == "aicreds.gateway.access"]
    assert {line["route"] for line in access} >= {
        "/healthz",
        "/api/v2/users/me/ai-credentials/{key}",
    }
    assert any(line.get("user_id") == "alice" for line in access)
    assert minted.token not in stderr and "process-secret-value" not in stderr


async def test_bad_setting_exits_with_the_variable_named(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.gateway.server",
        env={**os.environ, "GATEWAY_RATE_BURST": "lots"},
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 2
    assert b"GATEWAY_RATE_BURST" in stderr
