"""The SQLite backend itself: durability settings, its reader connections and the inline
reader, the single writer under another process's lock. What the stores promise on every
backend is in `test_store_contract`."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path

import aiosqlite
import pytest

from services.vault.store import AuditRecord, StoredCredential
from services.vault.store.sqlite_db import SqliteDatabase
from services.vault.store.vault_tables import SqlVaultStore

pytestmark = pytest.mark.sqlite_only("SQLite's pragmas, reader threads and file locks")

READERS = 3
PRAGMAS = ("journal_mode", "synchronous", "busy_timeout")


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[SqliteDatabase]:
    database = await SqliteDatabase.open(tmp_path / "vault.db", readers=READERS)
    try:
        yield database
    finally:
        await database.close()


def _audit(action: str) -> AuditRecord:
    return AuditRecord(datetime.now(UTC), "test", "alice", action, (), "ok")


async def _pragmas(conn: aiosqlite.Connection) -> tuple[object, ...]:
    values = []
    for pragma in PRAGMAS:
        async with conn.execute(f"PRAGMA {pragma}") as cursor:
            row = await cursor.fetchone()
        assert row is not None
        values.append(row[0])
    return tuple(values)


async def test_every_connection_is_wal_with_synchronous_full(db: SqliteDatabase) -> None:
    # synchronous=FULL (2) is what makes an acknowledged commit survive a power loss; a SIGKILL
    # test cannot tell it from NORMAL, so it is checked here, on the writer and every reader.
    async with db.writing(lock=None) as writer:
        assert tuple([(await writer.fetch_one(f"PRAGMA {p}") or ())[0] for p in PRAGMAS]) == (
            "wal",
            2,
            10_000,
        )
    async with AsyncExitStack() as stack:
        readers = [await stack.enter_async_context(db.reading()) for _ in range(READERS)]
        assert len({id(r) for r in readers}) == READERS
        for reader in readers:
            assert await _pragmas(reader) == ("wal", 2, 10_000)
    # The event loop's own read-only connection for small reads waits for nothing (see
    # `fetch_small`): no busy timeout, and it cannot write.
    inline = [
        db._inline.execute(f"PRAGMA {p}").fetchone()[0]
        for p in ("journal_mode", "synchronous", "busy_timeout", "query_only")
    ]
    assert inline == ["wal", 2, 0, 1]
    # Its connection for audit batches neither (see `_write_audit_batch`), and those wait for
    # no sync (1).
    inline_audit = [
        db._inline_audit.execute(f"PRAGMA {p}").fetchone()[0]
        for p in ("journal_mode", "synchronous", "busy_timeout", "query_only")
    ]
    assert inline_audit == ["wal", 1, 0, 0]
    assert Path(f"{db.path}-wal").exists()


async def test_a_write_cancelled_while_another_process_holds_the_lock_leaves_no_transaction(
    db: SqliteDatabase,
) -> None:
    # An RPC whose client gives up while `aicreds-admin` holds the database lock: its BEGIN
    # still completes on aiosqlite's thread once the lock is free. That transaction must be
    # ended, or every later write fails and the vault holds the database lock for good.
    store = SqlVaultStore(db)
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


async def test_an_audit_batch_is_one_statement_in_autocommit_on_the_writer(
    db: SqliteDatabase,
) -> None:
    # A batch holds the write lock like any write and leaves no transaction open behind it
    # (the first on the audit batches' thread, the next on the event loop).
    await asyncio.gather(*(db.append_audit(_audit(f"a{i}")) for i in range(4)))
    await db.append_audit(_audit("a4"))
    assert not db._writer.in_transaction
    assert not db._audit_writer.in_transaction
    assert not db._inline_audit.in_transaction
    async with db.writing(lock=None) as tx:
        assert await tx.fetch_one("SELECT count(*) FROM audit_events") == (5,)


async def test_small_reads_fall_back_to_a_reader_thread_while_sqlite_answers_busy(
    db: SqliteDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SqlVaultStore(db)
    await store.put_credential("alice", "k", b"blob", audit=_audit("put"))

    class Busy:
        def execute(self, sql: str, params: object) -> None:
            err = sqlite3.OperationalError("database is locked")
            err.sqlite_errorcode = sqlite3.SQLITE_BUSY
            raise err

    monkeypatch.setattr(db, "_inline", Busy())
    assert await store.get_credentials_named("alice", ["k", "absent"]) == {
        "k": StoredCredential(b"blob")
    }
