"""Credential host binding at the vault (SPEC 2.9, 4.7): set/get over gRPC, bindings kept by
value writes, audit without values, and a binding changed in the database refused."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
from aicreds.vault.v1 import credentials_pb2 as pb
from aicreds.vault.v1.credentials_pb2_grpc import CredentialServiceStub

from tests.support.databases import raw_execute, raw_fetch
from tests.support.vault import VaultHandle, running_vault

CALLERS = {"gateway": ["manage"], "router": ["resolve"]}
SECRET = "sk-bound-secret-value-0123456789"
OTHER = "sk-unbound-other-value-987654321"


@pytest.fixture
async def vault(tmp_path: Path) -> AsyncIterator[VaultHandle]:
    async with running_vault(tmp_path, CALLERS) as handle:
        yield handle


def _stub(vault: VaultHandle, caller: str = "gateway") -> CredentialServiceStub:
    return CredentialServiceStub(vault.channel(caller))


async def _put(stub: CredentialServiceStub, key: str, value: str, user: str = "alice") -> None:
    await stub.PutCredential(pb.PutCredentialRequest(user_id=user, key=key, value=value))


async def _set(
    stub: CredentialServiceStub, key: str, hosts: list[str], user: str = "alice"
) -> list[str]:
    reply = await stub.SetCredentialHosts(
        pb.SetCredentialHostsRequest(user_id=user, key=key, hosts=hosts)
    )
    assert reply.key == key
    return list(reply.hosts)


async def _hosts(stub: CredentialServiceStub, user: str = "alice") -> dict[str, list[str]]:
    reply = await stub.GetCredentialHosts(pb.GetCredentialHostsRequest(user_id=user))
    return {key: list(reply.hosts[key].hosts) for key in reply.hosts}


async def _resolve(vault: VaultHandle, *keys: str) -> pb.ResolveResponse:
    response: pb.ResolveResponse = await _stub(vault, "router").Resolve(
        pb.ResolveRequest(user_id="alice", keys=pb.KeyNames(keys=list(keys)))
    )
    return response


async def test_set_get_and_unbind(vault: VaultHandle) -> None:
    stub = _stub(vault)
    await _put(stub, "openai", SECRET)
    await _put(stub, "free", OTHER)
    assert await _hosts(stub) == {}

    stored = await _set(stub, "openai", ["API.OpenAI.com", "*.openai.azure.com", "[::1]:8443"])
    assert stored == ["*.openai.azure.com", "[::1]:8443", "api.openai.com"]
    assert await _hosts(stub) == {"openai": stored}
    one = await stub.GetCredentialHosts(pb.GetCredentialHostsRequest(user_id="alice", key="free"))
    assert list(one.hosts["free"].hosts) == []

    resolved = await _resolve(vault, "openai", "free")
    assert dict(resolved.values) == {"openai": SECRET, "free": OTHER}
    assert {k: list(v.hosts) for k, v in resolved.value_hosts.items()} == {"openai": stored}
    # The value itself is unchanged by binding.
    value = await stub.GetCredential(pb.GetCredentialRequest(user_id="alice", key="openai"))
    assert value.value == SECRET

    assert await _set(stub, "openai", []) == []
    assert await _hosts(stub) == {}
    assert not (await _resolve(vault, "openai")).value_hosts


async def test_unknown_key_and_bad_patterns_are_refused(vault: VaultHandle) -> None:
    stub = _stub(vault)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _set(stub, "absent", ["api.openai.com"])
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetCredentialHosts(pb.GetCredentialHostsRequest(user_id="alice", key="absent"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND

    await _put(stub, "openai", SECRET)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _set(stub, "openai", ["api.openai.com", "https://evil.example/x"])
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "https://evil.example/x" in (caught.value.details() or "")
    assert await _hosts(stub) == {}


async def test_only_manage_may_bind(vault: VaultHandle) -> None:
    await _put(_stub(vault), "openai", SECRET)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _set(_stub(vault, "router"), "openai", ["api.openai.com"])
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_binding_changes_are_audited_without_values_or_hosts(vault: VaultHandle) -> None:
    stub = _stub(vault)
    await _put(stub, "openai", SECRET)
    await _set(stub, "openai", ["api.openai.com"])
    with pytest.raises(grpc.aio.AioRpcError):
        await _set(stub, "openai", ["bad pattern"])
    db = vault.settings.database
    rows = raw_fetch(
        db,
        "SELECT action, keys, outcome FROM audit_events WHERE action = 'credentials.hosts'"
        " ORDER BY id",
    )
    everything = " ".join(str(r) for r in raw_fetch(db, "SELECT * FROM audit_events"))
    assert rows == [
        ("credentials.hosts", '["openai"]', "ok"),
        ("credentials.hosts", '["openai"]', "invalid_argument"),
    ]
    assert SECRET not in everything


async def test_put_and_replace_all_keep_bindings_delete_drops_them(vault: VaultHandle) -> None:
    stub = _stub(vault)
    await _put(stub, "openai", SECRET)
    await _put(stub, "gone", OTHER)
    await _set(stub, "openai", ["api.openai.com"])
    await _set(stub, "gone", ["gone.example"])

    await _put(stub, "openai", SECRET + "-2")
    assert await _hosts(stub) == {"openai": ["api.openai.com"], "gone": ["gone.example"]}
    assert dict((await _resolve(vault, "openai")).values) == {"openai": SECRET + "-2"}

    await stub.ReplaceCredentials(
        pb.ReplaceCredentialsRequest(
            user_id="alice", credentials={"openai": SECRET + "-3", "new": OTHER}
        )
    )
    assert await _hosts(stub) == {"openai": ["api.openai.com"]}
    resolved = await _resolve(vault, "openai", "new")
    assert dict(resolved.values) == {"openai": SECRET + "-3", "new": OTHER}
    # A key deleted and created again is unbound.
    await _put(stub, "gone", OTHER)
    assert await _hosts(stub) == {"openai": ["api.openai.com"]}

    await stub.DeleteCredential(pb.DeleteCredentialRequest(user_id="alice", key="openai"))
    await _put(stub, "openai", SECRET)
    assert await _hosts(stub) == {}


@pytest.mark.parametrize(
    ("bound_to", "tampered"),
    [
        (["api.openai.com"], '["127.0.0.1"]'),  # widened to another host
        (["api.openai.com"], "[]"),  # unbound by hand
        ([], '["api.openai.com"]'),  # an unbound value given a binding by hand
    ],
)
async def test_a_binding_changed_in_the_database_is_refused(
    vault: VaultHandle, caplog: pytest.LogCaptureFixture, bound_to: list[str], tampered: str
) -> None:
    stub = _stub(vault)
    await _put(stub, "openai", SECRET)
    await _put(stub, "free", OTHER)
    if bound_to:
        await _set(stub, "openai", bound_to)
    changed = raw_execute(
        vault.settings.database,
        "UPDATE credentials SET hosts = ? WHERE key = 'openai'",
        (tampered,),
    )
    assert changed == 1
    caplog.set_level(logging.ERROR, logger="aicreds.vault")

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _resolve(vault, "openai", "free")
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert SECRET not in (caught.value.details() or "")
    assert "integrity" in (caught.value.details() or "")
    integrity = [r for r in caplog.records if "integrity" in r.getMessage()]
    assert integrity
    assert getattr(integrity[0], "fields", {}).get("row_id") == "openai"
    assert all(SECRET not in r.getMessage() for r in caplog.records)

    # Never used or shown: not by a value read, not carried over by a write, not listed.
    for call in (
        stub.GetCredential(pb.GetCredentialRequest(user_id="alice", key="openai")),
        stub.GetCredentialHosts(pb.GetCredentialHostsRequest(user_id="alice", key="openai")),
        stub.GetCredentialHosts(pb.GetCredentialHostsRequest(user_id="alice")),
        stub.PutCredential(pb.PutCredentialRequest(user_id="alice", key="openai", value="x" * 9)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.INTERNAL

    # The other keys work.
    assert dict((await _resolve(vault, "free")).values) == {"free": OTHER}
