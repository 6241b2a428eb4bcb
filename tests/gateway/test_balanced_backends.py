"""The gateway's channels to the vault and the router spread calls over every replica the
address names (`open_channel`'s round robin), and retry a safe call on a replica that failed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.common.callers import write_private_file
from services.gateway.clients import RouterClient, VaultClient
from services.gateway.errors import ApiError
from tests.support.grpc_replicas import Replica, start_replica, target

GET_CREDENTIALS = "/aicreds.vault.v1.CredentialService/GetCredentials"
CREATE_TOKEN = "/aicreds.vault.v1.AuthService/CreateToken"
CHECK_UPSTREAM = "/aicreds.router.v1.RouterService/CheckUpstream"


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.token"
    write_private_file(path, "tok-gateway")
    return path


Vaults = tuple[Replica, Replica, list[bool]]


@pytest.fixture
async def vaults() -> AsyncIterator[Vaults]:
    """Two vault replicas; the second fails every call once the list is not empty."""
    failing: list[bool] = []
    first = await start_replica((GET_CREDENTIALS, CREATE_TOKEN))
    second = await start_replica(
        (GET_CREDENTIALS, CREATE_TOKEN), fails=lambda method, attempt: bool(failing)
    )
    yield first, second, failing
    await first.server.stop(0)
    await second.server.stop(0)


async def test_vault_calls_reach_every_vault_replica(vaults: Vaults, token_file: Path) -> None:
    first, second, failing = vaults
    vault = VaultClient(target(first, second), token_file, None, timeout=5)
    await vault.open()
    try:
        for _ in range(40):
            assert await vault.get_credentials("u1") == {}
    finally:
        await vault.close()
    # Round robin: both took calls (the second connects a moment later, so not exactly half).
    assert first.seen[GET_CREDENTIALS] >= 10 and second.seen[GET_CREDENTIALS] >= 10


async def test_a_read_is_retried_on_the_other_vault_and_a_token_is_minted_once(
    vaults: Vaults, token_file: Path
) -> None:
    first, second, failing = vaults
    vault = VaultClient(target(first, second), token_file, None, timeout=5)
    await vault.open()
    try:
        while not (first.seen[GET_CREDENTIALS] and second.seen[GET_CREDENTIALS]):
            await vault.get_credentials("u1")
        failing.append(True)
        for _ in range(10):
            assert await vault.get_credentials("u1") == {}
        errors = 0
        for _ in range(10):
            try:
                await vault.create_token("u1", "t", ["llm:invoke"], 60, parent_token_id="p")
            except ApiError as err:
                assert err.status == 503
                errors += 1
    finally:
        await vault.close()
    # Every CreateToken the failing replica took is a 503 the caller saw, never retried.
    assert errors == second.seen[CREATE_TOKEN] >= 1
    assert first.seen[CREATE_TOKEN] + second.seen[CREATE_TOKEN] == 10


async def test_router_calls_reach_every_router_replica(token_file: Path) -> None:
    replicas = [await start_replica((CHECK_UPSTREAM,)) for _ in range(2)]
    router = RouterClient(target(*replicas), token_file, None, timeout=5)
    await router.open()
    try:
        for _ in range(40):
            await router.check_upstream("https://api.example.com/v1")
    finally:
        await router.close()
        for replica in replicas:
            await replica.server.stop(0)
    assert all(replica.seen[CHECK_UPSTREAM] >= 10 for replica in replicas)
