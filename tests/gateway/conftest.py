"""Fixtures: a real vault and router, a real gateway served by uvicorn on 127.0.0.1:0, a client.

`gateway_stack(**settings)` starts a gateway in front of the test's vault and router; several
gateways may share them (replicas). `stack.mint(user, ...)` issues an API token through the
vault's own `AuthService.CreateToken`, as the operator command does.

The router checks every saved provider's `base_url` (SPEC 2.3). It resolves names with
`stub_resolver` (a fixed table, nothing looked up for real) and connects only to loopback, so no
test sends traffic outside 127.0.0.0/8. It runs with the default egress policy unless a test
starts its own with `running_router(..., egress_allow="127.0.0.1")`.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from aicreds.vault.v1 import auth_pb2, auth_pb2_grpc
from starlette.applications import Starlette

from services.common.callers import new_caller_token, write_callers_file, write_private_file
from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings
from services.router.config import RouterSettings
from services.router.server import RunningRouter, start_router
from tests.router.loopback_backend import LoopbackOnlyBackend
from tests.support.asgi import serve_asgi
from tests.support.vault import VaultHandle, running_vault

TEST_ORIGIN = "http://gateway.test"


@dataclass(frozen=True)
class Minted:
    """A token issued for a test: the plaintext and its id."""

    token: str = field(repr=False)
    id: str
    user_id: str

    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def api_key(self) -> dict[str, str]:
        return {"x-api-key": self.token}


@dataclass
class Stack:
    """One running gateway in front of the test's vault."""

    vault: VaultHandle
    url: str
    client: httpx.AsyncClient
    app: Starlette
    settings: GatewaySettings

    async def mint(
        self, user_id: str, scopes: Iterable[str] = (), *, expires_in: int = 0, name: str = "t"
    ) -> Minted:
        stub = auth_pb2_grpc.AuthServiceStub(self.vault.channel("gateway"))
        reply = await stub.CreateToken(
            auth_pb2.CreateTokenRequest(
                user_id=user_id, name=name, scopes=list(scopes), expires_in_seconds=expires_in
            ),
            timeout=5,
        )
        return Minted(reply.token, reply.info.id, user_id)


StackFactory = Callable[..., Awaitable[Stack]]


VAULT_CALLERS = {"gateway": ["manage"], "router": ["resolve"]}


@pytest.fixture
async def vault(tmp_path: Path) -> AsyncIterator[VaultHandle]:
    async with running_vault(tmp_path, callers=VAULT_CALLERS) as handle:
        yield handle


#: DNS for the tests' routers; any other name does not resolve.
HOSTS: dict[str, list[str]] = {
    "api.openai.com": ["162.159.140.245"],
    "api.anthropic.com": ["160.79.104.10"],
    "api.example.com": ["93.184.216.34"],
    "llm.internal.test": ["10.1.2.3"],
}


async def stub_resolver(host: str, port: int) -> Sequence[str]:
    if host not in HOSTS:
        raise OSError(f"stub resolver: unknown host {host}")
    return HOSTS[host]


def unused_address() -> str:
    """A loopback address nothing listens on (an absent backend)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


@asynccontextmanager
async def running_router(
    tmp_path: Path,
    vault: VaultHandle,
    *,
    egress_allow: str = "",
    network: LoopbackOnlyBackend | None = None,
) -> AsyncIterator[RunningRouter]:
    """A real router on 127.0.0.1:0 that trusts the gateway token in `gateway-router.token`
    (a gateway started after it reads that file); it connects through `network`."""
    state = tmp_path / "router-state"
    state.mkdir(exist_ok=True)
    gateway_token = new_caller_token()
    write_private_file(tmp_path / "gateway-router.token", gateway_token + "\n")
    write_callers_file(state / "router-callers.json", {"gateway": (gateway_token, ["invoke"])})
    write_private_file(state / "router-vault.token", vault.token("router") + "\n")
    settings = RouterSettings.from_env(
        {
            "STATE_DIR": str(state),
            "ROUTER_LISTEN": "127.0.0.1:0",
            "ROUTER_VAULT_ADDR": vault.address,
            "ROUTER_VAULT_TOKEN_FILE": str(state / "router-vault.token"),
            "ROUTER_CALLERS_FILE": str(state / "router-callers.json"),
            "ROUTER_EGRESS_ALLOW": egress_allow,
        }
    )
    router = await start_router(
        settings, resolver=stub_resolver, network_backend=network or LoopbackOnlyBackend()
    )
    try:
        yield router
    finally:
        await router.stop(0)


def base_settings(tmp_path: Path, vault: VaultHandle) -> GatewaySettings:
    vault_token = tmp_path / "gateway-vault.token"
    router_token = tmp_path / "gateway-router.token"
    write_private_file(vault_token, vault.token("gateway") + "\n")
    if not router_token.exists():
        write_private_file(router_token, "svc-no-router-in-these-tests\n")
    return GatewaySettings(
        listen="127.0.0.1:0",
        vault_addr=vault.address,
        router_addr=unused_address(),  # the router is absent unless a test names one
        vault_token_file=vault_token,
        router_token_file=router_token,
        origin=TEST_ORIGIN,
        cookie_secure=True,
        rate_limit=1000.0,
        rate_burst=1000,
        auth_fail_rate=1000.0,
        auth_fail_burst=1000,
    )


@pytest.fixture
async def router(tmp_path: Path, vault: VaultHandle) -> AsyncIterator[RunningRouter]:
    """The router of `gateway_stack`: default egress policy, stub DNS, loopback-only."""
    async with running_router(tmp_path, vault) as running:
        yield running


@pytest.fixture
async def gateway_stack(
    tmp_path: Path, vault: VaultHandle, router: RunningRouter
) -> AsyncIterator[StackFactory]:
    """Factory: `await gateway_stack(rate_burst=3, ...)` starts a gateway with those settings,
    in front of the test's vault and `router` unless `router_addr` says otherwise."""
    async with AsyncExitStack() as exits:

        async def make(**overrides: Any) -> Stack:
            overrides = {"router_addr": router.address, **overrides}
            settings = replace(base_settings(tmp_path, vault), **overrides)
            app = create_app(settings)
            url = await exits.enter_async_context(serve_asgi(app))
            client = await exits.enter_async_context(httpx.AsyncClient(base_url=url, timeout=10))
            return Stack(vault, url, client, app, settings)

        yield make


@pytest.fixture
async def stack(gateway_stack: StackFactory) -> Stack:
    return await gateway_stack()
