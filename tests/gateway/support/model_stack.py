"""The real stack for the SDK tests: vault, router and gateway in process, on 127.0.0.1:0.

    async with llm_stack(directory, upstream) as stack:
        stack.url                     the gateway (`base_url` for anthropic; + "/v1" for openai)
        stack.tokens.invoke           an API token of `alice` with every scope
        stack.tokens.no_llm_scope     one without `llm:invoke`

The vault is started with `tests/support/vault.py`, the router with its own `start_router`
(egress to 127.0.0.1 allowed; it connects through `LoopbackOnlyBackend`, so nothing leaves
loopback whatever the policy decides), the gateway with `create_app` under uvicorn. `alice` has two
credentials and three providers pointing at the fake upstream: `openai` (Bearer placeholder),
`anthropic` (`x-api-key` placeholder) and `strict` (`on_missing_credential: error`, referencing a
key she does not have).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from aicreds.vault.v1 import (
    auth_pb2,
    auth_pb2_grpc,
    credentials_pb2,
    credentials_pb2_grpc,
    providers_pb2,
    providers_pb2_grpc,
)
from starlette.applications import Starlette

from services.common.callers import new_caller_token, write_callers_file, write_private_file
from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings
from services.router.config import RouterSettings
from services.router.server import RunningRouter, start_router
from tests.gateway.support.fake_upstream import FakeUpstream
from tests.router.loopback_backend import LoopbackOnlyBackend
from tests.support.asgi import serve_asgi
from tests.support.vault import VaultHandle, running_vault

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
    url: str
    vault: VaultHandle
    router: RunningRouter
    app: Starlette
    tokens: Tokens
    gateway_settings: GatewaySettings

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


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _seed(vault: VaultHandle, upstream: FakeUpstream) -> Tokens:
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
    auth = auth_pb2_grpc.AuthServiceStub(channel)
    invoke = await auth.CreateToken(
        auth_pb2.CreateTokenRequest(user_id=USER, name="sdk"), timeout=5
    )
    narrow = await auth.CreateToken(
        auth_pb2.CreateTokenRequest(user_id=USER, name="no-llm", scopes=ALL_SCOPES_BUT_LLM),
        timeout=5,
    )
    return Tokens(invoke=invoke.token, no_llm_scope=narrow.token)


@contextlib.asynccontextmanager
async def llm_stack(
    directory: Path, upstream: FakeUpstream, **gateway_overrides: Any
) -> AsyncIterator[LlmStack]:
    """Vault, router and gateway, seeded for `alice`; everything stops on exit."""
    async with contextlib.AsyncExitStack() as exits:
        vault = await exits.enter_async_context(
            running_vault(directory, callers={"gateway": ["manage"], "router": ["resolve"]})
        )
        gateway_router_token = new_caller_token()
        router_callers = directory / "router-callers.json"
        write_callers_file(router_callers, {"gateway": (gateway_router_token, ["invoke"])})
        router_vault_token = directory / "router-vault.token"
        write_private_file(router_vault_token, vault.token("router") + "\n")
        router = await start_router(
            RouterSettings(
                listen="127.0.0.1:0",
                vault_addr=vault.address,
                vault_token_file=router_vault_token,
                callers_file=router_callers,
                egress_allow="127.0.0.1",
                connect_timeout=2.0,
                vault_timeout=2.0,
                shutdown_grace=0.0,
            ),
            network_backend=LoopbackOnlyBackend(),
        )
        exits.push_async_callback(router.stop, 0)

        gateway_vault_token = directory / "gateway-vault.token"
        gateway_router_token_file = directory / "gateway-router.token"
        write_private_file(gateway_vault_token, vault.token("gateway") + "\n")
        write_private_file(gateway_router_token_file, gateway_router_token + "\n")
        settings = GatewaySettings(
            listen=f"127.0.0.1:{_free_port()}",
            vault_addr=vault.address,
            router_addr=router.address,
            vault_token_file=gateway_vault_token,
            router_token_file=gateway_router_token_file,
            origin="http://gateway.test",
            rate_limit=1000.0,
            rate_burst=1000,
            auth_fail_rate=1000.0,
            auth_fail_burst=1000,
            vault_timeout=2.0,
            router_timeout=30.0,
        )
        settings = replace(settings, **gateway_overrides)
        app = create_app(settings)
        url = await exits.enter_async_context(serve_asgi(app))
        tokens = await _seed(vault, upstream)
        yield LlmStack(url, vault, router, app, tokens, settings)
