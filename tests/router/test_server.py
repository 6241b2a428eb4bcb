"""Settings, start-up refusals, and the `aicreds-router` process (health, SIGTERM)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.callers import write_callers_file, write_private_file
from services.common.grpc_server import ClientTls, TlsFiles
from services.router.config import RouterSettings
from services.router.server import StartupRefused, start_router


def test_defaults() -> None:
    settings = RouterSettings.from_env({})
    assert settings.listen == "127.0.0.1:50052"
    assert settings.vault_addr == "127.0.0.1:50051"
    assert settings.vault_token_file == Path(".state/router-vault.token")
    assert settings.callers_file == Path(".state/router-callers.json")
    assert settings.tls is None and settings.vault_tls is None
    assert settings.egress_allow == ""
    assert (settings.connect_timeout, settings.upstream_timeout, settings.vault_timeout) == (
        10.0,
        600.0,
        5.0,
    )


def test_every_variable_is_read() -> None:
    settings = RouterSettings.from_env(
        {
            "STATE_DIR": "/var/lib/aicreds",
            "ROUTER_LISTEN": "0.0.0.0:6000",
            "ROUTER_VAULT_ADDR": "vault:50051",
            "ROUTER_TLS_CERT": "/tls/cert.pem",
            "ROUTER_TLS_KEY": "/tls/key.pem",
            "ROUTER_TLS_CLIENT_CA": "/tls/ca.pem",
            "ROUTER_VAULT_TLS_CA": "/tls/vault-ca.pem",
            "ROUTER_VAULT_TLS_CERT": "/tls/client.pem",
            "ROUTER_VAULT_TLS_KEY": "/tls/client-key.pem",
            "ROUTER_EGRESS_ALLOW": "127.0.0.1, 10.0.0.0/8",
            "ROUTER_CONNECT_TIMEOUT": "3",
            "ROUTER_UPSTREAM_TIMEOUT": "120",
            "ROUTER_VAULT_TIMEOUT": "1.5",
            "ROUTER_MAX_CONNECTIONS": "64",
            "ROUTER_LOG_LEVEL": "debug",
        }
    )
    assert settings.listen == "0.0.0.0:6000"
    assert settings.vault_token_file == Path("/var/lib/aicreds/router-vault.token")
    assert settings.callers_file == Path("/var/lib/aicreds/router-callers.json")
    assert settings.tls == TlsFiles(
        Path("/tls/cert.pem"), Path("/tls/key.pem"), Path("/tls/ca.pem")
    )
    assert settings.vault_tls == ClientTls(
        Path("/tls/vault-ca.pem"), Path("/tls/client.pem"), Path("/tls/client-key.pem")
    )
    assert (settings.connect_timeout, settings.upstream_timeout, settings.vault_timeout) == (
        3.0,
        120.0,
        1.5,
    )
    assert settings.max_connections == 64
    assert settings.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"ROUTER_TLS_CERT": "/c.pem"}, "ROUTER_TLS_KEY"),
        ({"ROUTER_TLS_CLIENT_CA": "/ca.pem"}, "ROUTER_TLS_CLIENT_CA"),
        ({"ROUTER_VAULT_TLS_CERT": "/c", "ROUTER_VAULT_TLS_KEY": "/k"}, "ROUTER_VAULT_TLS_CA"),
        ({"ROUTER_EGRESS_ALLOW": "10.0.0.0/99"}, "ROUTER_EGRESS_ALLOW"),
        ({"ROUTER_CONNECT_TIMEOUT": "soon"}, "ROUTER_CONNECT_TIMEOUT"),
        ({"ROUTER_UPSTREAM_TIMEOUT": "0"}, "ROUTER_UPSTREAM_TIMEOUT"),
        ({"ROUTER_MAX_CONNECTIONS": "0"}, "ROUTER_MAX_CONNECTIONS"),
    ],
)
def test_bad_settings_name_the_variable(environ: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        RouterSettings.from_env(environ)


async def test_start_refuses_missing_or_open_files(tmp_path: Path) -> None:
    settings = RouterSettings(
        listen="127.0.0.1:0",
        vault_token_file=tmp_path / "token",
        callers_file=tmp_path / "callers.json",
    )
    with pytest.raises(StartupRefused, match="callers.json does not exist"):
        await start_router(settings)
    write_callers_file(settings.callers_file, {"gateway": ("tok", ["invoke"])})
    with pytest.raises(StartupRefused, match="token does not exist"):
        await start_router(settings)
    settings.callers_file.chmod(0o644)
    write_private_file(settings.vault_token_file, "svc-token\n")
    with pytest.raises(StartupRefused, match="readable by others"):
        await start_router(settings)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_the_process_serves_health_and_stops_on_sigterm(tmp_path: Path) -> None:
    write_callers_file(tmp_path / "router-callers.json", {"gateway": ("tok", ["invoke"])})
    write_private_file(tmp_path / "router-vault.token", "svc-token\n")
    port = _free_port()
    env = {
        **os.environ,
        "STATE_DIR": str(tmp_path),
        "ROUTER_LISTEN": f"127.0.0.1:{port}",
        "ROUTER_VAULT_ADDR": "127.0.0.1:1",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.router.server",
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service="aicreds.router.v1.RouterService")
            reply = await health.Check(request, timeout=20, wait_for_ready=True)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=20) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.stderr is not None
    log = (await process.stderr.read()).decode()
    assert '"message": "router serving"' in log
    assert "svc-token" not in log
