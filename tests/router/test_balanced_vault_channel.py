"""The router's channel to the vault (`open_vault_channel`, as `start_router` opens it) spreads
Resolve over every vault replica, and retries it on another replica when one fails with
UNAVAILABLE (a retried Resolve may leave one more audit row: acceptable)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aicreds.vault.v1 import credentials_pb2, providers_pb2

from services.router.resolve_client import ResolveClient, open_vault_channel
from tests.support.grpc_replicas import Replica, start_replica, target

RESOLVE = "/aicreds.vault.v1.CredentialService/Resolve"
REPLY = credentials_pb2.ResolveResponse(
    provider=providers_pb2.Provider(
        name="openai", base_url="https://api.openai.com/v1", kind=providers_pb2.PROVIDER_KIND_OPENAI
    ),
    values={"OPENAI_API_KEY": "sk-test"},
).SerializeToString()


@pytest.fixture
async def vaults() -> AsyncIterator[tuple[Replica, Replica, list[bool]]]:
    """Two vault replicas; the second fails every Resolve once the list is not empty."""
    failing: list[bool] = []
    first = await start_replica((RESOLVE,), replies={RESOLVE: REPLY})
    second = await start_replica(
        (RESOLVE,), replies={RESOLVE: REPLY}, fails=lambda method, attempt: bool(failing)
    )
    yield first, second, failing
    await first.server.stop(0)
    await second.server.stop(0)


async def test_resolve_reaches_every_vault_replica_and_is_retried_past_a_failing_one(
    vaults: tuple[Replica, Replica, list[bool]],
) -> None:
    first, second, failing = vaults
    channel = open_vault_channel(target(first, second), "tok-router")
    client = ResolveClient(channel)
    try:
        for _ in range(40):
            await client.resolve("u1", provider_name="openai", model=None, timeout=5)
        assert first.seen[RESOLVE] >= 10 and second.seen[RESOLVE] >= 10
        failing.append(True)
        before, before_failing = first.seen[RESOLVE], second.seen[RESOLVE]
        for _ in range(10):
            resolution = await client.resolve("u1", provider_name="openai", model=None, timeout=5)
            assert resolution.values == {"OPENAI_API_KEY": "sk-test"}
    finally:
        await channel.close()
    # Every call succeeded on the first replica, after a failed attempt on the second or not.
    assert first.seen[RESOLVE] - before == 10
    assert second.seen[RESOLVE] > before_failing  # attempts that failed there were retried
