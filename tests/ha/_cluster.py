"""A whole deployment on loopback, as processes: vaults on one PostgreSQL database, routers,
gateways sharing one Redis, a fake upstream in the test's loop.

    async with running_cluster(tmp_path, upstream, vaults=2, routers=2, gateways=2) as cluster:
        cluster.gateway_urls             ["http://127.0.0.1:P1", "http://127.0.0.1:P2"]
        cluster.kill("router", 0)        SIGKILL, as a node that dies
        cluster.calls_logged("vault", 1, "Resolve")     RPCs in that process's access log
        await cluster.redis.stop(); await cluster.redis.start()

Every process is started from this checkout (`python -m services.<name>.server`) with only the
documented environment variables, on ports chosen just before; routers and gateways name every
replica of the service they call (`ipv4:127.0.0.1:A,127.0.0.1:B`), so gRPC spreads calls over
them. Redis is a server of the test's own (`redis-server` on a free port, nothing saved), so
stopping it touches no other test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc.aio
import httpx
from aicreds.vault.v1 import auth_pb2, auth_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.callers import write_callers_file, write_private_file
from services.common.grpc_server import open_channel
from services.vault.store.location import PostgresUrl
from tests.support.postgres import fresh_postgres
from tests.support.vault import prepare_vault_files

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 60.0
USER = "alice"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def redis_server_binary() -> str | None:
    return shutil.which("redis-server")


@dataclass
class RedisServer:
    """`redis-server` of the test's own on a fixed port; stop and start it again."""

    port: int
    directory: Path
    process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        binary = redis_server_binary()
        assert binary is not None, "redis-server is not installed"
        self.process = await asyncio.create_subprocess_exec(
            binary,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.directory),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        async with asyncio.timeout(START_TIMEOUT):
            while True:
                with contextlib.suppress(OSError):
                    _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                    writer.close()
                    return
                await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        self.process = None


@dataclass
class Service:
    """One process of the cluster."""

    kind: str
    index: int
    address: str
    log: Path
    process: asyncio.subprocess.Process

    @property
    def alive(self) -> bool:
        return self.process.returncode is None


@dataclass
class Cluster:
    directory: Path
    database: PostgresUrl
    redis: RedisServer
    services: dict[str, list[Service]] = field(default_factory=dict)
    gateway_vault_token: str = field(default="", repr=False)

    @property
    def gateway_urls(self) -> list[str]:
        return [f"http://{s.address}" for s in self.services["gateway"]]

    def service(self, kind: str, index: int) -> Service:
        return self.services[kind][index]

    def kill(self, kind: str, index: int) -> None:
        """SIGKILL one process, as a node that dies (no drain, no goodbye)."""
        self.service(kind, index).process.send_signal(signal.SIGKILL)

    def calls_logged(self, kind: str, index: int, method: str) -> int:
        """How many RPCs of `method` (its last name, e.g. `Resolve`) the process's access log
        shows so far."""
        text = self.service(kind, index).log.read_text(errors="replace")
        return text.count(f'/{method}"')

    async def mint(self, name: str, user: str = USER) -> tuple[str, str]:
        """A new API token of `user` (all scopes), made through the first vault: (token, id)."""
        vault = self.service("vault", 0).address
        channel = open_channel(vault, self.gateway_vault_token)
        try:
            reply = await auth_pb2_grpc.AuthServiceStub(channel).CreateToken(
                auth_pb2.CreateTokenRequest(user_id=user, name=name), timeout=10
            )
        finally:
            await channel.close()
        return reply.token, reply.info.id


def _targets(services: list[Service]) -> str:
    return "ipv4:" + ",".join(s.address for s in services)


async def _spawn(
    kind: str, index: int, env: Mapping[str, str], directory: Path, address: str
) -> Service:
    log = directory / f"{kind}-{index}.log"
    with log.open("ab") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            f"services.{kind}.server",
            cwd=ROOT,
            # This checkout's generated code too, whatever checkout the venv was installed from.
            env={**env, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'gen'}", "PYTHONUNBUFFERED": "1"},
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )
    return Service(kind, index, address, log, process)


async def _ready(service: Service) -> None:
    """Wait until the process answers: gRPC health SERVING, or the gateway's /readyz 200."""
    async with asyncio.timeout(START_TIMEOUT):
        while True:
            if not service.alive:
                raise AssertionError(
                    f"{service.kind} {service.index} exited while starting:\n"
                    + service.log.read_text(errors="replace")[-3000:]
                )
            if await _answers(service):
                return
            await asyncio.sleep(0.1)


async def _answers(service: Service) -> bool:
    if service.kind == "gateway":
        try:
            async with httpx.AsyncClient() as client:
                reply = await client.get(f"http://{service.address}/readyz", timeout=2)
            return reply.status_code == 200
        except httpx.HTTPError:
            return False
    async with grpc.aio.insecure_channel(service.address) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=1
            )
        except grpc.aio.AioRpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


@asynccontextmanager
async def running_cluster(
    directory: Path,
    *,
    vaults: int = 2,
    routers: int = 2,
    gateways: int = 2,
    gateway_env: Mapping[str, str] | None = None,
) -> AsyncIterator[Cluster]:
    """Start the cluster (vaults, then routers, then gateways); kill every process on exit."""
    files = prepare_vault_files(directory, {"gateway": ["manage"], "router": ["resolve"]})
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "ROUTER_", "GATEWAY_"))
    }
    router_callers = directory / "router-callers.json"
    gateway_router_token = "svc-test-gateway-router-" + os.urandom(12).hex()
    write_callers_file(router_callers, {"gateway": (gateway_router_token, ["invoke"])})
    tokens = {
        "gateway-vault": files.token("gateway"),
        "gateway-router": gateway_router_token,
        "router-vault": files.token("router"),
    }
    for name, token in tokens.items():
        write_private_file(directory / f"{name}.token", token + "\n")
    redis = RedisServer(free_port(), directory)
    with fresh_postgres("ha") as database:
        cluster = Cluster(directory, database, redis, gateway_vault_token=files.token("gateway"))
        try:
            await redis.start()
            vault_env = {**base, **files.env(), "VAULT_LOG_LEVEL": "INFO"}
            vault_env["VAULT_DATABASE"] = database.url
            cluster.services["vault"] = []
            for i in range(vaults):
                address = f"127.0.0.1:{free_port()}"
                env = {**vault_env, "VAULT_LISTEN": address}
                cluster.services["vault"].append(await _spawn("vault", i, env, directory, address))
            await asyncio.gather(*(_ready(s) for s in cluster.services["vault"]))
            router_env = {
                **base,
                "STATE_DIR": str(directory),
                "ROUTER_VAULT_ADDR": _targets(cluster.services["vault"]),
                "ROUTER_VAULT_TOKEN_FILE": str(directory / "router-vault.token"),
                "ROUTER_CALLERS_FILE": str(router_callers),
                "ROUTER_EGRESS_ALLOW": "127.0.0.1",
                "ROUTER_VAULT_TIMEOUT": "2",
            }
            cluster.services["router"] = []
            for i in range(routers):
                address = f"127.0.0.1:{free_port()}"
                env = {**router_env, "ROUTER_LISTEN": address}
                cluster.services["router"].append(
                    await _spawn("router", i, env, directory, address)
                )
            await asyncio.gather(*(_ready(s) for s in cluster.services["router"]))
            env_of_gateways = {
                **base,
                "STATE_DIR": str(directory),
                "GATEWAY_VAULT_ADDR": _targets(cluster.services["vault"]),
                "GATEWAY_ROUTER_ADDR": _targets(cluster.services["router"]),
                "GATEWAY_VAULT_TOKEN_FILE": str(directory / "gateway-vault.token"),
                "GATEWAY_ROUTER_TOKEN_FILE": str(directory / "gateway-router.token"),
                "GATEWAY_REDIS_URL": redis.url,
                "GATEWAY_VAULT_TIMEOUT": "2",
                **(gateway_env or {}),
            }
            cluster.services["gateway"] = []
            for i in range(gateways):
                address = f"127.0.0.1:{free_port()}"
                env = {**env_of_gateways, "GATEWAY_LISTEN": address}
                cluster.services["gateway"].append(
                    await _spawn("gateway", i, env, directory, address)
                )
            await asyncio.gather(*(_ready(s) for s in cluster.services["gateway"]))
            yield cluster
        finally:
            for group in cluster.services.values():
                for service in group:
                    if service.alive:
                        service.process.kill()
            for group in cluster.services.values():
                for service in group:
                    with contextlib.suppress(ProcessLookupError):
                        await asyncio.wait_for(service.process.wait(), 10)
            await redis.stop()
