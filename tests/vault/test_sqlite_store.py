"""The SQLite backend itself: durability settings, atomic transactions, the single writer."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path

import aiosqlite
import pytest

from services.vault.store import AuditRecord, WrappedDataKey
from services.vault.store.rotation import RewrapConflict, SqliteRotationStore
from services.vault.store.sqlite import SqliteVaultStore
from services.vault.store.sqlite_db import SqliteDatabase

READERS = 3


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[SqliteDatabase]:
    database = await SqliteDatabase.open(tmp_path / "vault.db", readers=READERS)
    try:
        yield database
    finally:
        await database.close()


def _audit(action: str) -> AuditRecord:
    return AuditRecord(datetime.now(UTC), "test", "alice", action, (), "ok")


async def _pragmas(conn: aiosqlite.Connection) -> tuple[str, int, int]:
    values = []
    for pragma in ("journal_mode", "synchronous", "busy_timeout"):
        async with conn.execute(f"PRAGMA {pragma}") as cursor:
            row = await cursor.fetchone()
        values.append(row[0])
    return values[0], values[1], values[2]


async def test_every_connection_is_wal_with_synchronous_full(db: SqliteDatabase) -> None:
    # synchronous=FULL (2) is what makes an acknowledged commit survive a power loss; a SIGKILL
    # test cannot tell it from NORMAL, so it is checked here, on the writer and every reader.
    async with db.writing() as writer:
        assert await _pragmas(writer) == ("wal", 2, 10_000)
    async with AsyncExitStack() as stack:
        readers = [await stack.enter_async_context(db.reading()) for _ in range(READERS)]
        assert len({id(r) for r in readers}) == READERS
        for reader in readers:
            assert await _pragmas(reader) == ("wal", 2, 10_000)
    assert Path(f"{db.path}-wal").exists()


async def test_a_replace_all_failing_midway_leaves_the_old_map(db: SqliteDatabase) -> None:
    store = SqliteVaultStore(db)
    await store.replace_credentials("alice", {"a": b"old-a", "b": b"old-b"}, audit=_audit("r1"))
    # The second row breaks NOT NULL after the delete and the first insert have run.
    with pytest.raises(sqlite3.IntegrityError):
        await store.replace_credentials(
            "alice",
            {"c": b"new-c", "d": None},  # type: ignore[dict-item]
            audit=_audit("r2"),
        )
    assert await store.get_credentials("alice") == {"a": b"old-a", "b": b"old-b"}
    actions = [row[0] for row in await db.fetch_all("SELECT action FROM audit_events")]
    assert actions == ["r1"]


async def test_a_rewrap_batch_with_a_row_changed_meanwhile_changes_nothing(
    db: SqliteDatabase,
) -> None:
    store = SqliteVaultStore(db)
    for user in ("alice", "bob"):
        await store.add_data_key(WrappedDataKey(user, f"d-{user}", "k1", f"k1-{user}".encode()))
    alice, bob = (await SqliteRotationStore(db).data_keys_not_under("k2", 10))[:2]
    stale_bob = WrappedDataKey("bob", "d-bob", "k1", b"what it was before")
    with pytest.raises(RewrapConflict, match="'bob'"):
        await SqliteRotationStore(db).replace_wrapped_data_keys(
            [
                (alice, WrappedDataKey("alice", "d-alice", "k2", b"k2-alice")),
                (stale_bob, WrappedDataKey("bob", "d-bob", "k2", b"k2-bob")),
            ]
        )
    assert await store.get_data_key("alice") == alice  # its update was rolled back
    assert await store.get_data_key("bob") == bob


async def test_a_write_cancelled_while_another_process_holds_the_lock_leaves_no_transaction(
    db: SqliteDatabase,
) -> None:
    # An RPC whose client gives up while `aicreds-admin` holds the database lock: its BEGIN
    # still completes on aiosqlite's thread once the lock is free. That transaction must be
    # ended, or every later write fails and the vault holds the database lock for good.
    store = SqliteVaultStore(db)
    other = sqlite3.connect(db.path, isolation_level=None, timeout=5)
    try:
        other.execute("BEGIN IMMEDIATE")
        write = asyncio.create_task(store.add_master_key_check("cancelled", b"x"))
        await asyncio.sleep(0.2)
        write.cancel()
        await asyncio.sleep(0.05)
        other.execute("COMMIT")
        with pytest.raises(asyncio.CancelledError):
            await write
        await store.add_master_key_check("after", b"y")
        other.execute("BEGIN IMMEDIATE")  # the vault holds no lock: another process can write
        other.execute("COMMIT")
    finally:
        other.close()
    assert set(await store.get_master_key_checks()) == {"after"}
