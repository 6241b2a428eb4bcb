"""Audit gaps (issue 15 item 3): reads of plaintext values are audited, a delete-all names the
keys it deleted, a replace-all names what it added, changed and removed, and the database
itself refuses to change or delete audit rows."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc.aio
import pytest
from aicreds.vault.v1 import credentials_pb2 as pb
from aicreds.vault.v1.credentials_pb2_grpc import CredentialServiceStub

from tests.support.databases import raw_execute, raw_fetch
from tests.support.vault import VaultHandle, running_vault


@pytest.fixture
async def vault(tmp_path: Path) -> AsyncIterator[VaultHandle]:
    async with running_vault(tmp_path) as handle:
        yield handle


def _events(vault: VaultHandle) -> list[tuple[str, str, list[str], str]]:
    rows = raw_fetch(
        vault.settings.database,
        "SELECT caller, action, keys, outcome FROM audit_events ORDER BY id",
    )
    return [(c, a, json.loads(k), o) for c, a, k, o in rows]


async def test_reading_values_is_audited_with_the_keys_handed_out(vault: VaultHandle) -> None:
    stub = CredentialServiceStub(vault.channel("gateway"))
    await stub.ReplaceCredentials(
        pb.ReplaceCredentialsRequest(user_id="alice", credentials={"b": "sk-b-1", "a": "sk-a-1"})
    )
    await stub.GetCredentials(pb.GetCredentialsRequest(user_id="alice"))
    await stub.GetCredential(pb.GetCredentialRequest(user_id="alice", key="a"))
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.GetCredential(pb.GetCredentialRequest(user_id="alice", key="absent"))
    assert _events(vault)[1:] == [
        ("gateway", "credentials.get_all", ["a", "b"], "ok"),
        ("gateway", "credentials.get", ["a"], "ok"),
        ("gateway", "credentials.get", ["absent"], "credential_not_found"),
    ]


async def test_replace_all_names_added_changed_and_removed_keys(vault: VaultHandle) -> None:
    stub = CredentialServiceStub(vault.channel("gateway"))
    first = {"kept": "sk-same-1", "changed": "sk-old-1", "removed": "sk-gone-1"}
    await stub.ReplaceCredentials(pb.ReplaceCredentialsRequest(user_id="alice", credentials=first))
    second = {"kept": "sk-same-1", "changed": "sk-new-1", "added": "sk-add-1"}
    await stub.ReplaceCredentials(pb.ReplaceCredentialsRequest(user_id="alice", credentials=second))
    assert _events(vault)[1] == (
        "gateway",
        "credentials.replace",
        ["added:added", "changed:changed", "removed:removed"],
        "ok",
    )
    stored = await stub.GetCredentials(pb.GetCredentialsRequest(user_id="alice"))
    assert dict(stored.credentials) == second
    dump = json.dumps(_events(vault))
    assert not any(value in dump for value in (*first.values(), *second.values()))


async def test_delete_all_names_the_deleted_keys(vault: VaultHandle) -> None:
    stub = CredentialServiceStub(vault.channel("gateway"))
    await stub.ReplaceCredentials(
        pb.ReplaceCredentialsRequest(user_id="alice", credentials={"y": "sk-y-1", "x": "sk-x-1"})
    )
    deleted = await stub.DeleteCredentials(pb.DeleteCredentialsRequest(user_id="alice"))
    assert deleted.deleted == 2
    assert _events(vault)[-1] == ("gateway", "credentials.delete_all", ["x", "y"], "ok")


async def test_the_database_refuses_to_change_or_delete_audit_rows(vault: VaultHandle) -> None:
    stub = CredentialServiceStub(vault.channel("gateway"))
    await stub.PutCredential(pb.PutCredentialRequest(user_id="alice", key="k", value="sk-k-1"))
    db = vault.settings.database
    statements = ["UPDATE audit_events SET outcome = 'forged'", "DELETE FROM audit_events"]
    if not isinstance(db, Path):
        statements.append("TRUNCATE audit_events")  # PostgreSQL's other way to delete rows
    for statement in statements:
        # A trigger refuses it: RAISE(ABORT) on SQLite, RAISE EXCEPTION on PostgreSQL.
        with pytest.raises((sqlite3.IntegrityError, asyncpg.RaiseError), match="append-only"):
            raw_execute(db, statement)
    assert _events(vault) == [("gateway", "credentials.put", ["k"], "ok")]
