"""What is on disk: ciphertext only, bound to its row, audited without values."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
from aicreds.vault.v1 import credentials_pb2 as pb
from aicreds.vault.v1.credentials_pb2_grpc import CredentialServiceStub

from services.vault.store.location import DatabaseLocation
from tests.support.databases import raw_execute, raw_fetch
from tests.support.vault import VaultHandle, running_vault
from tests.vault._disk import database_bytes

VALUES = {
    "openai_api_key": "sk-proj-AT-REST-openai-4f9c2b7e1d",
    "anthropic_api_key": "sk-ant-AT-REST-anthropic-8a1e3c",
    "short": "tiny-AT-REST-1",
}


@pytest.fixture
async def vault(tmp_path: Path) -> AsyncIterator[VaultHandle]:
    async with running_vault(tmp_path) as handle:
        yield handle


async def test_no_plaintext_value_is_in_the_database_or_its_wal(vault: VaultHandle) -> None:
    stub = CredentialServiceStub(vault.channel("gateway"))
    await stub.ReplaceCredentials(pb.ReplaceCredentialsRequest(user_id="alice", credentials=VALUES))
    for key, value in VALUES.items():
        await stub.PutCredential(pb.PutCredentialRequest(user_id="bob", key=key, value=value))
    db = vault.settings.database
    if isinstance(db, Path):  # WAL mode, writes not checkpointed: the WAL is searched too
        assert Path(f"{db}-wal").exists()
    data = database_bytes(db)  # on PostgreSQL a dump, its blobs decoded
    for value in VALUES.values():
        for form in (value.encode(), value.encode("utf-16-le")):
            assert form not in data and form.hex().encode() not in data
    # Keys (names) are stored in clear; that is what makes UNIQUE(user, key) work.
    keys = {row[0] for row in raw_fetch(db, "SELECT key FROM credentials")}
    assert keys == set(VALUES)
    assert all(key.encode() in data for key in VALUES)  # the search does see the tables


async def _read_code(stub: CredentialServiceStub, user: str, key: str) -> grpc.StatusCode:
    try:
        await stub.GetCredential(pb.GetCredentialRequest(user_id=user, key=key))
    except grpc.aio.AioRpcError as err:
        assert dict(err.trailing_metadata() or ())["x-error-reason"] == "decryption_failed"
        return err.code()
    return grpc.StatusCode.OK


def _blob(db: DatabaseLocation, user: str, key: str) -> bytes:
    ((blob,),) = raw_fetch(
        db, "SELECT blob FROM credentials WHERE user_id = ? AND key = ?", (user, key)
    )
    return bytes(blob)


def _set_blob(db: DatabaseLocation, user: str, key: str, blob: bytes) -> None:
    changed = raw_execute(
        db,
        "INSERT INTO credentials (user_id, key, blob, updated_at) VALUES (?, ?, ?, 'x')"
        " ON CONFLICT (user_id, key) DO UPDATE SET blob = excluded.blob",
        (user, key, blob),
    )
    assert changed == 1


async def test_a_ciphertext_copied_to_another_row_fails_to_decrypt(vault: VaultHandle) -> None:
    stub = CredentialServiceStub(vault.channel("gateway"))
    db = vault.settings.database
    await stub.ReplaceCredentials(pb.ReplaceCredentialsRequest(user_id="alice", credentials=VALUES))
    await stub.PutCredential(
        pb.PutCredentialRequest(user_id="bob", key="openai_api_key", value="b")
    )
    stolen = _blob(db, "alice", "openai_api_key")

    _set_blob(db, "bob", "openai_api_key", stolen)  # another user's row, same key
    assert await _read_code(stub, "bob", "openai_api_key") == grpc.StatusCode.INTERNAL
    _set_blob(db, "alice", "short", stolen)  # the same user's row of another key
    assert await _read_code(stub, "alice", "short") == grpc.StatusCode.INTERNAL
    _set_blob(db, "alice", "new_key", stolen)  # a new row of the same user
    assert await _read_code(stub, "alice", "new_key") == grpc.StatusCode.INTERNAL
    # The original still opens.
    assert await _read_code(stub, "alice", "openai_api_key") == grpc.StatusCode.OK


async def test_a_value_copied_with_its_data_key_to_another_user_fails_to_decrypt(
    vault: VaultHandle,
) -> None:
    # Someone who can write the database copies Alice's wrapped data key and her ciphertext to
    # a new user: both are bound to Alice by their AAD, so neither opens as Mallory's.
    stub = CredentialServiceStub(vault.channel("gateway"))
    db = vault.settings.database
    await stub.PutCredential(
        pb.PutCredentialRequest(
            user_id="alice", key="openai_api_key", value=VALUES["openai_api_key"]
        )
    )
    copied = raw_execute(
        db,
        "INSERT INTO data_keys (user_id, dek_id, kek_id, wrapped, created_at, updated_at)"
        " SELECT 'mallory', dek_id, kek_id, wrapped, created_at, updated_at FROM data_keys"
        " WHERE user_id = 'alice'",
    )
    assert copied == 1
    _set_blob(db, "mallory", "openai_api_key", _blob(db, "alice", "openai_api_key"))
    assert await _read_code(stub, "mallory", "openai_api_key") == grpc.StatusCode.INTERNAL
    assert await _read_code(stub, "alice", "openai_api_key") == grpc.StatusCode.OK


async def test_a_tampered_stored_blob_fails_with_internal_and_no_value(vault: VaultHandle) -> None:
    stub = CredentialServiceStub(vault.channel("gateway"))
    db = vault.settings.database
    await stub.PutCredential(
        pb.PutCredentialRequest(
            user_id="alice", key="openai_api_key", value=VALUES["openai_api_key"]
        )
    )
    original = _blob(db, "alice", "openai_api_key")
    for index in (0, 1, 3, 10, len(original) // 2, len(original) - 1):
        tampered = bytearray(original)
        tampered[index] ^= 0x04
        _set_blob(db, "alice", "openai_api_key", bytes(tampered))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetCredential(pb.GetCredentialRequest(user_id="alice", key="openai_api_key"))
        assert info.value.code() == grpc.StatusCode.INTERNAL
        assert dict(info.value.trailing_metadata() or ())["x-error-reason"] in {
            "decryption_failed",
            "unknown_master_key",
        }
    _set_blob(db, "alice", "openai_api_key", original[:20])
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.GetCredentials(pb.GetCredentialsRequest(user_id="alice"))
    assert info.value.code() == grpc.StatusCode.INTERNAL


async def test_changes_and_resolves_are_audited_with_key_names_only(vault: VaultHandle) -> None:
    stub = CredentialServiceStub(vault.channel("gateway"))
    router = CredentialServiceStub(vault.channel("router"))
    await stub.ReplaceCredentials(pb.ReplaceCredentialsRequest(user_id="alice", credentials=VALUES))
    await stub.PutCredential(pb.PutCredentialRequest(user_id="alice", key="extra", value="sk-x-1"))
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.PutCredential(
            pb.PutCredentialRequest(user_id="alice", key="extra", value="bad\nsk-x-2")
        )
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.DeleteCredential(pb.DeleteCredentialRequest(user_id="alice", key="absent"))
    await stub.DeleteCredential(pb.DeleteCredentialRequest(user_id="alice", key="extra"))
    await router.Resolve(
        pb.ResolveRequest(user_id="alice", keys=pb.KeyNames(keys=["short", "missing"]))
    )
    await stub.DeleteCredentials(pb.DeleteCredentialsRequest(user_id="alice"))

    rows = raw_fetch(
        vault.settings.database,
        "SELECT caller, user_id, action, keys, outcome FROM audit_events ORDER BY id",
    )
    events = [(c, u, a, json.loads(k), o) for c, u, a, k, o in rows]
    assert events == [
        ("gateway", "alice", "credentials.replace", [f"added:{k}" for k in sorted(VALUES)], "ok"),
        ("gateway", "alice", "credentials.put", ["extra"], "ok"),
        ("gateway", "alice", "credentials.put", ["extra"], "invalid_argument"),
        ("gateway", "alice", "credentials.delete", ["absent"], "credential_not_found"),
        ("gateway", "alice", "credentials.delete", ["extra"], "ok"),
        ("router", "alice", "credentials.resolve", ["short", "missing"], "ok"),
        ("gateway", "alice", "credentials.delete_all", sorted(VALUES), "ok"),
    ]
    dump = json.dumps(rows)
    for value in (*VALUES.values(), "sk-x-1", "sk-x-2"):
        assert value not in dump
