"""The one way tests start the services: a real vault, router and gateways on 127.0.0.1, in the
test's event loop.

    async with running_stack(directory, egress_allow="127.0.0.1") as services:
        services.vault                      tests/support/vault.py's VaultHandle
        services.router                     a RouterHandle (None with router=False)
        stack = await services.gateway(rate_burst=3)      one more gateway (a stateless replica)
        stack.url, stack.client, await stack.mint("alice", scopes)

`stack_factory` (tests/conftest.py) is the same as a fixture; `tests/gateway/conftest.py`'s
`gateway_stack` starts gateways on it. Synchronous clients (the official SDKs, Playwright,
schemathesis) enter it on a `BackgroundLoop` (tests/support/background.py). Presets on top of it:
`llm_stack` (alice seeded with providers pointing at a `FakeUpstream`) and
`ui_stack` (plus a gateway whose origin is its own address, as a browser page's).

Routers resolve names with `stub_resolver` (a fixed table, nothing looked up for real) and
connect through `LoopbackOnlyBackend`, so no test sends traffic outside 127.0.0.0/8 whatever the
egress policy (`egress_allow`) decides. A router started in `directory` trusts the gateway token
it writes to `directory/gateway-router.token`; gateways started later in the same directory read it.

Processes are not started here: the tests of a service's own entry point (`make run`,
`aicreds-gateway`, `python -m services.router.server`) start it themselves.
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
from aicreds.vault.v1 import (
    auth_pb2,
    auth_pb2_grpc,
    credentials_pb2,
    credentials_pb2_grpc,
    providers_pb2,
    providers_pb2_grpc,
)
from starlette.applications import Starlette

from services.common.callers import write_callers_file, write_private_file
from services.common.tracing_setup import TracingSettings
from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings
from services.router.config import RouterSettings
from services.router.server import RunningRouter, start_router
from tests.support.asgi import bind_loopback, serve_asgi, socket_url
from tests.support.fake_upstream import FakeUpstream
from tests.support.loopback_backend import LoopbackOnlyBackend
from tests.support.vault import DEFAULT_CALLERS, VaultHandle, running_vault

#: The gateway's configured origin unless a test asks for its own address.
TEST_ORIGIN = "http://gateway.test"

#: DNS for the tests' routers; any other name does not resolve.
HOSTS: dict[str, list[str]] = {
    "api.openai.com": ["162.159.140.245"],
    "api.anthropic.com": ["160.79.104.10"],
    "api.example.com": ["93.184.216.34"],
    "llm.internal.test": ["10.1.2.3"],
    "api.internal.test": ["10.20.30.40"],
    "loopback.test": ["127.0.0.1"],
    "public.test": ["93.184.216.34"],  # public, so allowed: the backend refuses to connect
}


async def stub_resolver(host: str, port: int) -> Sequence[str]:
    """DNS for tests: a fixed table; nothing is ever looked up for real."""
    if host not in HOSTS:
        raise OSError(f"stub resolver: unknown host {host}")
    return HOSTS[host]


def unused_address() -> str:
    """A loopback address nothing listens on (an absent backend)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


def tracing_to(otlp_endpoint: str | None, service: str) -> TracingSettings:
    """What `service` reads when `OTEL_EXPORTER_OTLP_ENDPOINT` is `otlp_endpoint` (None:
    unset, no tracing): the same path as the environment of a deployment."""
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp_endpoint} if otlp_endpoint else {}
    return TracingSettings.from_env(environ, f"aicreds-{service}")


# -- the router ---------------------------------------------------------------------------------

GATEWAY_CALLER: Mapping[str, Sequence[str]] = {"gateway": ["invoke"]}

#: A router's timeouts in tests: short, so an absent peer fails a test in seconds.
ROUTER_TEST_SETTINGS: Mapping[str, Any] = {
    "connect_timeout": 2.0,
    "vault_timeout": 2.0,
    "upstream_timeout": 30.0,
    "shutdown_grace": 0.0,
}


@dataclass
class RouterHandle:
    """A router running in this process, its callers' tokens and the network it connects by."""

    router: RunningRouter
    tokens: Mapping[str, str] = field(repr=False)
    network: LoopbackOnlyBackend

    @property
    def address(self) -> str:
        return self.router.address

    async def stop(self, grace: float = 0) -> None:
        await self.router.stop(grace)


@asynccontextmanager
async def running_router(
    directory: Path,
    vault: VaultHandle | None = None,
    *,
    vault_address: str = "",
    vault_token: str = "",
    callers: Mapping[str, Sequence[str]] = GATEWAY_CALLER,
    egress_allow: str = "",
    network: LoopbackOnlyBackend | None = None,
    **overrides: Any,
) -> AsyncIterator[RouterHandle]:
    """A real router on 127.0.0.1:0 in front of `vault` (or `vault_address` with `vault_token`,
    e.g. a fake vault); each of `callers` gets a fresh token, the gateway's also written to
    `directory/gateway-router.token`. `overrides` are `RouterSettings` fields."""
    if vault is not None:
        vault_address, vault_token = vault.address, vault.token("router")
    state = directory / "router-state"
    state.mkdir(parents=True, exist_ok=True)
    tokens = {name: "svc-test-" + secrets.token_urlsafe(24) for name in callers}
    callers_file = state / "router-callers.json"
    write_callers_file(callers_file, {n: (tokens[n], list(r)) for n, r in callers.items()})
    if "gateway" in tokens:
        write_private_file(directory / "gateway-router.token", tokens["gateway"] + "\n")
    token_file = state / "router-vault.token"
    write_private_file(token_file, vault_token + "\n")
    settings = RouterSettings(
        listen="127.0.0.1:0",
        vault_addr=vault_address,
        vault_token_file=token_file,
        callers_file=callers_file,
        egress_allow=egress_allow,
        **ROUTER_TEST_SETTINGS,
    )
    settings = replace(settings, **overrides)
    network = network or LoopbackOnlyBackend()
    router = await start_router(settings, resolver=stub_resolver, network_backend=network)
    try:
        yield RouterHandle(router, tokens, network)
    finally:
        await router.stop(0)


# -- gateways -----------------------------------------------------------------------------------


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


async def mint(
    vault: VaultHandle,
    user_id: str,
    scopes: Iterable[str] = (),
    *,
    expires_in: int = 0,
    name: str = "t",
) -> Minted:
    """An API token issued through the vault's own `AuthService.CreateToken`, as the operator
    command does."""
    stub = auth_pb2_grpc.AuthServiceStub(vault.channel("gateway"))
    reply = await stub.CreateToken(
        auth_pb2.CreateTokenRequest(
            user_id=user_id, name=name, scopes=list(scopes), expires_in_seconds=expires_in
        ),
        timeout=5,
    )
    return Minted(reply.token, reply.info.id, user_id)


@dataclass
class Stack:
    """One running gateway in front of the stack's vault (and router), with a client."""

    vault: VaultHandle
    url: str
    client: httpx.AsyncClient
    app: Starlette
    settings: GatewaySettings

    @property
    def openai_url(self) -> str:
        """The openai SDK's `base_url` (the anthropic SDK's is `url`)."""
        return f"{self.url}/v1"

    async def mint(
        self, user_id: str, scopes: Iterable[str] = (), *, expires_in: int = 0, name: str = "t"
    ) -> Minted:
        return await mint(self.vault, user_id, scopes, expires_in=expires_in, name=name)


def gateway_settings(directory: Path, vault: VaultHandle, **overrides: Any) -> GatewaySettings:
    """Settings of a gateway in front of `vault`; the router is absent (an unused address)
    unless `router_addr` names one. Rate limits are high enough not to matter."""
    vault_token = directory / "gateway-vault.token"
    router_token = directory / "gateway-router.token"
    write_private_file(vault_token, vault.token("gateway") + "\n")
    if not router_token.exists():
        write_private_file(router_token, "svc-no-router-in-these-tests\n")
    settings = GatewaySettings(
        listen="127.0.0.1:0",
        vault_addr=vault.address,
        router_addr=unused_address(),
        vault_token_file=vault_token,
        router_token_file=router_token,
        origin=TEST_ORIGIN,
        cookie_secure=True,
        rate_limit=1000.0,
        rate_burst=1000,
        user_rate_limit=1000.0,
        user_rate_burst=1000,
        auth_fail_rate=1000.0,
        auth_fail_burst=1000,
    )
    return replace(settings, **overrides)


StackFactory = Callable[..., Awaitable[Stack]]


@dataclass
class ServiceStack:
    """A vault and (unless `router=False`) a router; start gateways in front with `gateway()`."""

    directory: Path
    vault: VaultHandle
    router: RouterHandle | None
    exits: AsyncExitStack = field(repr=False)
    otlp_endpoint: str | None = None

    async def gateway(self, *, own_origin: bool = False, **overrides: Any) -> Stack:
        """Serve one more gateway on 127.0.0.1:0 until the stack stops. `overrides` are
        `GatewaySettings` fields; with `own_origin` its origin is its own address (as a browser
        page's `Origin`), with plain-http cookies, as `make run` does."""
        sock = bind_loopback()
        url = socket_url(sock)
        if self.router is not None:
            overrides = {"router_addr": self.router.address, **overrides}
        if own_origin:
            overrides = {"origin": url, "cookie_secure": False, **overrides}
        if self.otlp_endpoint:
            overrides = {"tracing": tracing_to(self.otlp_endpoint, "gateway"), **overrides}
        settings = gateway_settings(
            self.directory, self.vault, listen=url.removeprefix("http://"), **overrides
        )
        app = create_app(settings)
        await self.exits.enter_async_context(serve_asgi(app, sock))
        client = await self.exits.enter_async_context(httpx.AsyncClient(base_url=url, timeout=10))
        return Stack(self.vault, url, client, app, settings)

    async def mint(
        self, user_id: str, scopes: Iterable[str] = (), *, expires_in: int = 0, name: str = "t"
    ) -> Minted:
        return await mint(self.vault, user_id, scopes, expires_in=expires_in, name=name)


@asynccontextmanager
async def running_stack(
    directory: Path,
    *,
    router: bool = True,
    egress_allow: str = "",
    network: LoopbackOnlyBackend | None = None,
    vault_callers: Mapping[str, Iterable[str]] = DEFAULT_CALLERS,
    router_settings: Mapping[str, Any] | None = None,
    otlp_endpoint: str | None = None,
) -> AsyncIterator[ServiceStack]:
    """A real vault and router with their state under `directory`; everything started on it
    (gateways included) stops on exit. With `otlp_endpoint` every service sends its spans
    there, as with `OTEL_EXPORTER_OTLP_ENDPOINT` set."""
    directory.mkdir(parents=True, exist_ok=True)
    async with AsyncExitStack() as exits:
        vault = await exits.enter_async_context(
            running_vault(
                directory, callers=vault_callers, tracing=tracing_to(otlp_endpoint, "vault")
            )
        )
        handle = None
        if router:
            handle = await exits.enter_async_context(
                running_router(
                    directory,
                    vault,
                    egress_allow=egress_allow,
                    network=network,
                    **{"tracing": tracing_to(otlp_endpoint, "router"), **(router_settings or {})},
                )
            )
        yield ServiceStack(directory, vault, handle, exits, otlp_endpoint)


ServiceStackFactory = Callable[..., Awaitable[ServiceStack]]


# -- presets: a user with providers on a fake upstream, and the browser's gateway --------------

USER = "alice"
OPENAI_KEY = "sk-upstream-openai-" + "Q" * 24
ANTHROPIC_KEY = "sk-ant-upstream-" + "Z" * 24
ALL_SCOPES_BUT_LLM = [
    "credentials:read",
    "credentials:write",
    "providers:read",
    "providers:write",
    "tokens:manage",
]


@dataclass(frozen=True)
class Tokens:
    invoke: str = field(repr=False)
    no_llm_scope: str = field(repr=False)


@dataclass
class LlmStack:
    """A gateway (origin `TEST_ORIGIN`) on a stack where `alice` is seeded (`seed_llm_user`)."""

    url: str
    services: ServiceStack
    app: Starlette
    tokens: Tokens
    gateway_settings: GatewaySettings

    @property
    def vault(self) -> VaultHandle:
        return self.services.vault

    @property
    def openai_url(self) -> str:
        return f"{self.url}/v1"

    def secrets(self) -> list[str]:
        """Every secret of the run: no log line, and no upstream request, may hold one wrongly."""
        return [OPENAI_KEY, ANTHROPIC_KEY, self.tokens.invoke, self.tokens.no_llm_scope]


def _provider(name: str, kind: Any, base_url: str, **fields: Any) -> providers_pb2.Provider:
    headers = {
        header: providers_pb2.HeaderValues(values=values)
        for header, values in fields.pop("headers").items()
    }
    return providers_pb2.Provider(
        name=name, kind=kind, base_url=base_url, headers=headers, **fields
    )


async def seed_llm_user(vault: VaultHandle, upstream: FakeUpstream) -> Tokens:
    """`alice` with two credentials and four providers on `upstream`: `openai` (Bearer
    placeholder), `anthropic` (`x-api-key` placeholder), `strict` (`on_missing_credential:
    error`, referencing a key she does not have) and `warned` (a header whose key is missing)."""
    channel = vault.channel("gateway")
    credentials = credentials_pb2_grpc.CredentialServiceStub(channel)
    await credentials.ReplaceCredentials(
        credentials_pb2.ReplaceCredentialsRequest(
            user_id=USER,
            credentials={"openai_api_key": OPENAI_KEY, "anthropic_api_key": ANTHROPIC_KEY},
        ),
        timeout=5,
    )
    base_url = f"{upstream.origin}/v1"  # as the openai SDK's base_url
    providers = providers_pb2_grpc.ProviderServiceStub(channel)
    for provider in (
        _provider(
            "openai",
            providers_pb2.PROVIDER_KIND_OPENAI,
            base_url,
            headers={"Authorization": ["Bearer {{credential:openai_api_key}}"]},
            models=["gpt-4", "text-embedding-3-small"],
        ),
        _provider(
            "anthropic",
            providers_pb2.PROVIDER_KIND_ANTHROPIC,
            upstream.origin,  # as the anthropic SDK's base_url: no /v1
            headers={"x-api-key": ["{{credential:anthropic_api_key}}"]},
            models=["claude-3.5-sonnet"],
        ),
        _provider(
            "strict",
            providers_pb2.PROVIDER_KIND_OPENAI,
            base_url,
            headers={"Authorization": ["Bearer {{credential:strict_api_key}}"]},
            models=["strict-model"],
            on_missing_credential=providers_pb2.ON_MISSING_CREDENTIAL_ERROR,
        ),
        _provider(
            "warned",
            providers_pb2.PROVIDER_KIND_OPENAI,
            base_url,
            headers={
                "Authorization": ["Bearer {{credential:openai_api_key}}"],
                "OpenAI-Organization": ["{{credential:openai_org}}"],
            },
            models=["warned-model"],
        ),
    ):
        await providers.CreateProvider(
            providers_pb2.CreateProviderRequest(user_id=USER, provider=provider), timeout=5
        )
    invoke = await mint(vault, USER, name="sdk")
    narrow = await mint(vault, USER, ALL_SCOPES_BUT_LLM, name="no-llm")
    return Tokens(invoke=invoke.token, no_llm_scope=narrow.token)


@asynccontextmanager
async def llm_stack(
    directory: Path,
    upstream: FakeUpstream,
    *,
    otlp_endpoint: str | None = None,
    **gateway_overrides: Any,
) -> AsyncIterator[LlmStack]:
    """Vault, router (egress to 127.0.0.1 allowed) and gateway, `alice` seeded on `upstream`
    (`otlp_endpoint`: where every service sends its spans, see `running_stack`)."""
    async with running_stack(
        directory, egress_allow="127.0.0.1", otlp_endpoint=otlp_endpoint
    ) as services:
        gateway_overrides = {"vault_timeout": 2.0, "router_timeout": 30.0, **gateway_overrides}
        gateway = await services.gateway(**gateway_overrides)
        tokens = await seed_llm_user(services.vault, upstream)
        yield LlmStack(gateway.url, services, gateway.app, tokens, gateway.settings)


@dataclass
class UiStack:
    """The browser's gateway (`url`, which is its origin) beside `llm`'s, on the same stack."""

    url: str
    llm: LlmStack
    settings: GatewaySettings

    async def mint(self, user_id: str, scopes: Iterable[str] = (), name: str = "ui") -> str:
        """A new API token for `user_id` (the operator's way, through the vault)."""
        return (await mint(self.llm.vault, user_id, scopes, name=name)).token


@asynccontextmanager
async def ui_stack(directory: Path, upstream: FakeUpstream) -> AsyncIterator[UiStack]:
    async with llm_stack(directory, upstream) as llm:
        gateway = await llm.services.gateway(
            own_origin=True, vault_timeout=2.0, router_timeout=30.0
        )
        yield UiStack(gateway.url, llm, gateway.settings)
