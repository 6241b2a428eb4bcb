"""Per-user limits: number and size of providers, size of the credential map (SPEC 4.8)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import grpc.aio
import pytest
from aicreds.vault.v1 import credentials_pb2 as cpb
from aicreds.vault.v1 import providers_pb2 as pb
from aicreds.vault.v1.credentials_pb2_grpc import CredentialServiceStub
from aicreds.vault.v1.providers_pb2_grpc import ProviderServiceStub

from services.common.grpc_server import open_channel
from services.vault.config import VaultSettings
from services.vault.server import start_vault
from tests.support.vault import prepare_vault_files


@asynccontextmanager
async def limited_vault(
    tmp_path: Path, limits: Mapping[str, str]
) -> AsyncIterator[tuple[CredentialServiceStub, ProviderServiceStub, CredentialServiceStub]]:
    """A vault with `VAULT_MAX_*` set; stubs for the gateway, and for the router (Resolve)."""
    files = prepare_vault_files(tmp_path)
    running = await start_vault(VaultSettings.from_env({**files.env(), **limits}))
    channel = open_channel(f"127.0.0.1:{running.port}", files.token("gateway"))
    router = open_channel(f"127.0.0.1:{running.port}", files.token("router"))
    try:
        yield (
            CredentialServiceStub(channel),
            ProviderServiceStub(channel),
            CredentialServiceStub(router),
        )
    finally:
        await channel.close()
        await router.close()
        await running.stop(0)


def _provider(name: str, header: str = "x") -> pb.Provider:
    return pb.Provider(
        name=name,
        kind=pb.PROVIDER_KIND_CUSTOM,
        base_url="https://example.com",
        headers={"X-Note": pb.HeaderValues(values=[header])},
        models=[f"{name}-model"],
    )


def _refused_for_limit(err: grpc.aio.AioRpcError, setting: str, value: int) -> None:
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert dict(err.trailing_metadata() or ())["x-error-reason"] == "limit_exceeded"
    assert setting in (err.details() or "") and str(value) in (err.details() or "")


async def test_one_provider_too_many_is_refused_and_nothing_written(tmp_path: Path) -> None:
    async with limited_vault(tmp_path, {"VAULT_MAX_PROVIDERS": "3"}) as (_, providers, _r):
        for name in ("a", "b", "c"):
            await providers.CreateProvider(
                pb.CreateProviderRequest(user_id="alice", provider=_provider(name))
            )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await providers.CreateProvider(
                pb.CreateProviderRequest(user_id="alice", provider=_provider("d"))
            )
        _refused_for_limit(info.value, "VAULT_MAX_PROVIDERS", 3)
        listed = await providers.ListProviders(pb.ListProvidersRequest(user_id="alice"))
        assert [p.name for p in listed.providers] == ["a", "b", "c"]
        # Updating one of them is no new provider; another user has their own allowance.
        await providers.UpdateProvider(
            pb.UpdateProviderRequest(user_id="alice", provider=_provider("a", "y"))
        )
        await providers.CreateProvider(
            pb.CreateProviderRequest(user_id="bob", provider=_provider("d"))
        )


async def test_providers_over_their_total_size_are_refused(tmp_path: Path) -> None:
    async with limited_vault(tmp_path, {"VAULT_MAX_PROVIDER_BYTES": "4000"}) as (_, providers, _r):
        await providers.CreateProvider(
            pb.CreateProviderRequest(user_id="alice", provider=_provider("a", "x" * 1500))
        )
        await providers.CreateProvider(
            pb.CreateProviderRequest(user_id="alice", provider=_provider("b", "x" * 1500))
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await providers.UpdateProvider(
                pb.UpdateProviderRequest(user_id="alice", provider=_provider("b", "x" * 3000))
            )
        _refused_for_limit(info.value, "VAULT_MAX_PROVIDER_BYTES", 4000)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await providers.CreateProvider(
                pb.CreateProviderRequest(user_id="alice", provider=_provider("c", "x" * 1500))
            )
        _refused_for_limit(info.value, "VAULT_MAX_PROVIDER_BYTES", 4000)
        kept = await providers.GetProvider(pb.GetProviderRequest(user_id="alice", name="b"))
        assert list(kept.provider.headers["X-Note"].values) == ["x" * 1500]


async def test_the_credential_map_is_bounded_in_bytes_on_every_write(tmp_path: Path) -> None:
    async with limited_vault(tmp_path, {"VAULT_MAX_CREDENTIAL_BYTES": "1000"}) as (creds, _, _r):
        # Exactly at the limit (keys and values, UTF-8 bytes): accepted.
        full = {"k1": "v" * 498, "k2": "w" * 498}
        await creds.ReplaceCredentials(
            cpb.ReplaceCredentialsRequest(user_id="alice", credentials=full)
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await creds.PutCredential(
                cpb.PutCredentialRequest(user_id="alice", key="k3", value="x")
            )
        _refused_for_limit(info.value, "VAULT_MAX_CREDENTIAL_BYTES", 1000)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await creds.PutCredential(
                cpb.PutCredentialRequest(user_id="alice", key="k1", value="v" * 499)
            )
        _refused_for_limit(info.value, "VAULT_MAX_CREDENTIAL_BYTES", 1000)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await creds.ReplaceCredentials(
                cpb.ReplaceCredentialsRequest(user_id="alice", credentials={"k": "v" * 1000})
            )
        _refused_for_limit(info.value, "VAULT_MAX_CREDENTIAL_BYTES", 1000)
        assert "v" * 498 not in (info.value.details() or "")
        stored = await creds.GetCredentials(cpb.GetCredentialsRequest(user_id="alice"))
        assert dict(stored.credentials) == full
        # Replacing a value by a shorter one stays possible at the limit.
        await creds.PutCredential(cpb.PutCredentialRequest(user_id="alice", key="k1", value="v"))


async def test_the_number_of_credentials_is_not_limited(tmp_path: Path) -> None:
    """SPEC 2.2: any number of keys; 20,000 short pairs fit well within the default bytes."""
    many = {f"key_{i:05d}": f"value-{i}" for i in range(20_000)}
    async with limited_vault(tmp_path, {}) as (creds, _, _r):
        await creds.ReplaceCredentials(
            cpb.ReplaceCredentialsRequest(user_id="alice", credentials=many)
        )
        await creds.PutCredential(
            cpb.PutCredentialRequest(user_id="alice", key="one_more", value="v")
        )
        stored = await creds.GetCredentials(cpb.GetCredentialsRequest(user_id="alice"))
        assert len(stored.credentials) == 20_001


def test_limits_are_read_from_the_environment(tmp_path: Path) -> None:
    settings = VaultSettings.from_env({"STATE_DIR": str(tmp_path)})
    assert (settings.limits.max_providers, settings.limits.max_provider_bytes) == (200, 1 << 20)
    assert settings.limits.max_credential_bytes == 8 << 20
    with pytest.raises(ValueError, match="VAULT_MAX_PROVIDERS"):
        VaultSettings.from_env({"STATE_DIR": str(tmp_path), "VAULT_MAX_PROVIDERS": "0"})
