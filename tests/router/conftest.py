"""Fixtures: routers on 127.0.0.1:0 (`tests/support/stack.py`'s `running_router`) in front of a
vault (the fake one here, or a real one) and the recording `FakeUpstream`."""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from aicreds.router.v1 import router_pb2, router_pb2_grpc
from aicreds.vault.v1 import providers_pb2

from services.common.grpc_server import open_channel
from services.router.server import RunningRouter
from tests.router.fake_vault import FakeVault
from tests.support.fake_upstream import FakeUpstream, UpstreamFactory
from tests.support.loopback_backend import LoopbackOnlyBackend
from tests.support.stack import running_router

ROUTER_CALLERS: Mapping[str, Sequence[str]] = {
    "gateway": ["invoke"],
    "agent": ["invoke"],
    "manager": ["manage"],
}


@dataclass
class Answer:
    """Everything an Invoke returned."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    warnings: list[str]
    chunks: int

    def header(self, name: str) -> str | None:
        return next((v for n, v in self.headers if n.lower() == name.lower()), None)


def warnings_of(metadata: Sequence[tuple[str, str | bytes]] | None) -> list[str]:
    return [str(v) for k, v in metadata or () if k == "x-credential-warning"]


@dataclass
class RouterEnv:
    """A started router, its callers' tokens and the upstream it may reach."""

    router: RunningRouter
    upstream: FakeUpstream
    tokens: Mapping[str, str] = field(repr=False)
    backend: LoopbackOnlyBackend = field(default_factory=LoopbackOnlyBackend)
    _channels: list[grpc.aio.Channel] = field(default_factory=list)

    def stub(self, caller: str | None = "gateway") -> router_pb2_grpc.RouterServiceStub:
        target = self.router.address
        if caller is None:
            channel = grpc.aio.insecure_channel(target)
        else:
            token = self.tokens.get(caller, "svc-unknown-" + secrets.token_urlsafe(8))
            channel = open_channel(target, token)
        self._channels.append(channel)
        return router_pb2_grpc.RouterServiceStub(channel)

    async def invoke(
        self, request: router_pb2.InvokeRequest, *, caller: str = "gateway", timeout: float = 10
    ) -> Answer:
        call = self.stub(caller).Invoke(request, timeout=timeout)
        head: router_pb2.ResponseHead | None = None
        body = b""
        chunks = 0
        async for message in call:
            if message.HasField("head"):
                head = message.head
            else:
                body += message.chunk
                chunks += 1
        assert head is not None
        return Answer(
            head.status,
            [(h.name, h.value) for h in head.headers],
            body,
            warnings_of(await call.trailing_metadata()),
            chunks,
        )

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()


RouterFactory = Callable[..., Awaitable[RouterEnv]]


def provider(
    name: str,
    base_url: str,
    headers: Mapping[str, Sequence[str]],
    *,
    models: Sequence[str] = (),
    on_missing: str = "warn",
    kind: providers_pb2.ProviderKind = providers_pb2.PROVIDER_KIND_CUSTOM,
) -> providers_pb2.Provider:
    """A provider message as the vault stores it."""
    return providers_pb2.Provider(
        name=name,
        kind=kind,
        base_url=base_url,
        headers={k: providers_pb2.HeaderValues(values=list(v)) for k, v in headers.items()},
        models=list(models),
        on_missing_credential=(
            providers_pb2.ON_MISSING_CREDENTIAL_ERROR
            if on_missing == "error"
            else providers_pb2.ON_MISSING_CREDENTIAL_WARN
        ),
    )


@pytest.fixture
async def upstream(upstream_factory: UpstreamFactory) -> FakeUpstream:
    """The upstream every router of the test may reach: `echo_handler` until a test swaps it."""
    return await upstream_factory()


@pytest.fixture
async def router_factory(tmp_path: Path, upstream: FakeUpstream) -> AsyncIterator[RouterFactory]:
    """Start routers: `await router_factory(vault_address, vault_token, **settings)`, egress to
    127.0.0.1 allowed, callers `ROUTER_CALLERS`."""
    envs: list[RouterEnv] = []
    async with AsyncExitStack() as exits:

        async def make(vault_address: str, vault_token: str, **overrides: Any) -> RouterEnv:
            handle = await exits.enter_async_context(
                running_router(
                    tmp_path / f"router-{len(envs)}",
                    vault_address=vault_address,
                    vault_token=vault_token,
                    callers=ROUTER_CALLERS,
                    **{"egress_allow": "127.0.0.1", **overrides},
                )
            )
            env = RouterEnv(handle.router, upstream, handle.tokens, handle.network)
            envs.append(env)
            return env

        yield make
        for env in envs:
            await env.close()


@pytest.fixture
async def fake_vault() -> AsyncIterator[FakeVault]:
    vault = FakeVault(token="svc-router-" + secrets.token_urlsafe(16))
    await vault.start()
    yield vault
    await vault.stop()


@pytest.fixture
async def fake_env(fake_vault: FakeVault, router_factory: RouterFactory) -> RouterEnv:
    """A router in front of the fake vault."""
    return await router_factory(fake_vault.address, fake_vault.token)


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> Callable[[], str]:
    """Every log record of the test, rendered with its structured fields, as one string."""
    caplog.set_level(logging.DEBUG)

    def text() -> str:
        out = []
        for record in caplog.records:
            out.append(record.getMessage())
            out.append(repr(getattr(record, "fields", None)))
            out.append(repr(record.args))
            if record.exc_info and record.exc_info[1] is not None:
                out.append(repr(record.exc_info[1]))
        return "\n".join(out)

    return text
