"""A vault on PostgreSQL whose database stops answering: callers get UNAVAILABLE (retryable),
never INTERNAL and never a hang, and the vault recovers by itself when the database answers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import grpc
import grpc.aio
import pytest
from aicreds.vault.v1 import credentials_pb2 as pb
from aicreds.vault.v1.credentials_pb2_grpc import CredentialServiceStub

from services.common.error_reason import ERROR_REASON_KEY
from services.common.grpc_server import open_channel
from services.vault.config import VaultSettings
from services.vault.server import start_vault
from services.vault.store.location import PostgresUrl
from tests.support.vault import prepare_vault_files

pytestmark = pytest.mark.postgres_only("the outage of a database server")


def _reason(err: grpc.aio.AioRpcError) -> str | None:
    for key, value in err.trailing_metadata() or ():
        if key == ERROR_REASON_KEY:
            return str(value)
    return None


async def test_a_database_that_does_not_answer_in_time_is_unavailable_then_recovers(
    tmp_path: Path,
) -> None:
    files = prepare_vault_files(tmp_path)
    assert isinstance(files.database, PostgresUrl)
    env = {**files.env(), "VAULT_DATABASE_STATEMENT_TIMEOUT_MS": "300"}
    running = await start_vault(VaultSettings.from_env(env))
    channel = open_channel(f"127.0.0.1:{running.port}", files.token("gateway"))
    stub = CredentialServiceStub(channel)
    blocker = await asyncpg.connect(files.database.url)
    try:
        put = pb.PutCredentialRequest(user_id="alice", key="k", value="sk-before")
        await stub.PutCredential(put, timeout=10)
        # Another session holds the table: the vault's write waits, and its statement timeout
        # ends the wait.
        held = blocker.transaction()
        await held.start()
        await blocker.execute("LOCK TABLE credentials IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.PutCredential(
                pb.PutCredentialRequest(user_id="alice", key="k", value="sk-during"), timeout=10
            )
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert _reason(refused.value) == "database_unavailable"
        assert "sk-during" not in (refused.value.details() or "")
        await held.rollback()
        # Answering again: the vault serves without a restart, and the refused write is absent.
        got = await stub.GetCredential(
            pb.GetCredentialRequest(user_id="alice", key="k"), timeout=10
        )
        assert got.value == "sk-before"
        # A connection the server ended: the pool replaces it; calls keep working.
        await blocker.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        await asyncio.sleep(0.2)
        answers = []
        for _ in range(5):
            try:
                answers.append(
                    (
                        await stub.GetCredential(pb.GetCredentialRequest(user_id="alice", key="k"))
                    ).value
                )
            except grpc.aio.AioRpcError as err:
                assert err.code() == grpc.StatusCode.UNAVAILABLE, err
        assert answers and answers[-1] == "sk-before"
    finally:
        await blocker.close()
        await channel.close()
        await running.stop(0)
