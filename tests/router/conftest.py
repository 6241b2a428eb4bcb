"""Fixtures: a router on 127.0.0.1:0 in front of a vault and a recording upstream."""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import grpc
import grpc.aio
import pytest
from aicreds.router.v1 import router_pb2, router_pb2_grpc
from aicreds.vault.v1 import providers_pb2

from services.common.callers import write_callers_file, write_private_file
from services.common.grpc_server import open_channel
from services.router.config import RouterSettings
from services.router.server import RunningRouter, start_router
from tests.router.fake_vault import FakeVault
from tests.router.loopback_backend import LoopbackOnlyBackend
from tests.router.upstream_server import UpstreamServer, running_upstream

ROUTER_CALLERS: Mapping[str, Sequence[str]] = {
    "gateway": ["invoke"],
    "agent": ["invoke"],
    "manager": ["manage"],
}

HOSTS = {
    "api.internal.test": ["10.20.30.40"],
    "loopback.test": ["127.0.0.1"],
    "public.test": ["93.184.216.34"],  # public, so allowed: the backend refuses to connect
}


async def stub_resolver(host: str, port: int) -> Sequence[str]:
    """DNS for tests: a fixed table; nothing is ever looked up for real."""
    if host not in HOSTS:
        raise OSError(f"stub resolver: unknown host {host}")
    return HOSTS[host]


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
    upstream: UpstreamServer
    tokens: dict[str, str] = field(repr=False)
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
    kind: providers_pb2.ProviderKind.ValueType = providers_pb2.PROVIDER_KIND_CUSTOM,
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
async def upstream() -> AsyncIterator[UpstreamServer]:
    async with running_upstream() as server:
        yield server


@pytest.fixture
async def router_factory(tmp_path: Path, upstream: UpstreamServer) -> AsyncIterator[RouterFactory]:
    """Start routers: `await router_factory(vault_address, vault_token, **settings)`."""
    envs: list[RouterEnv] = []

    async def make(vault_address: str, vault_token: str, **overrides: object) -> RouterEnv:
        directory = tmp_path / f"router-{len(envs)}"
        tokens = {name: "svc-test-" + secrets.token_urlsafe(24) for name in ROUTER_CALLERS}
        callers_file = directory / "router-callers.json"
        write_callers_file(
            callers_file, {n: (tokens[n], list(r)) for n, r in ROUTER_CALLERS.items()}
        )
        token_file = directory / "router-vault.token"
        write_private_file(token_file, vault_token + "\n")
        settings = RouterSettings(
            listen="127.0.0.1:0",
            vault_addr=vault_address,
            vault_token_file=token_file,
            callers_file=callers_file,
            egress_allow="127.0.0.1",
            connect_timeout=2.0,
            upstream_timeout=30.0,
            vault_timeout=2.0,
        )
        settings = replace(settings, **overrides)  # type: ignore[arg-type]
        backend = LoopbackOnlyBackend()
        router = await start_router(settings, resolver=stub_resolver, network_backend=backend)
        env = RouterEnv(router, upstream, tokens, backend)
        envs.append(env)
        return env

    yield make
    for env in envs:
        await env.close()
        await env.router.stop(0)


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
