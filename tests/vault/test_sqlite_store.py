"""The SQLite backend itself: durability settings, atomic transactions, the single writer."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path

import aiosqlite
import pytest

from services.vault.store import AuditRecord, StoredCredential, WrappedDataKey
from services.vault.store.rotation import RewrapConflict, SqlRotationStore
from services.vault.store.sqlite_db import SqliteDatabase
from services.vault.store.vault_tables import SqlVaultStore

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
    async with db.writing(lock=None) as writer:
        assert await _pragmas(writer) == ("wal", 2, 10_000)
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
    assert Path(f"{db.path}-wal").exists()


async def test_a_replace_all_failing_midway_leaves_the_old_map(db: SqliteDatabase) -> None:
    store = SqlVaultStore(db)
    await store.replace_credentials("alice", {"a": b"old-a", "b": b"old-b"}, audit=_audit("r1"))
    # The second row breaks NOT NULL after the delete and the first insert have run.
    with pytest.raises(sqlite3.IntegrityError):
        await store.replace_credentials(
            "alice",
            {"c": b"new-c", "d": None},  # type: ignore[dict-item]
            audit=_audit("r2"),
        )
    assert await store.get_credentials("alice") == {
        "a": StoredCredential(b"old-a"),
        "b": StoredCredential(b"old-b"),
    }
    actions = [row[0] for row in await db.fetch_all("SELECT action FROM audit_events")]
    assert actions == ["r1"]


async def test_a_rewrap_batch_with_a_row_changed_meanwhile_changes_nothing(
    db: SqliteDatabase,
) -> None:
    store = SqlVaultStore(db)
    for user in ("alice", "bob"):
        await store.add_data_key(WrappedDataKey(user, f"d-{user}", "k1", f"k1-{user}".encode()))
    alice, bob = (await SqlRotationStore(db).data_keys_not_under("k2", 10))[:2]
    stale_bob = WrappedDataKey("bob", "d-bob", "k1", b"what it was before")
    with pytest.raises(RewrapConflict, match="'bob'"):
        await SqlRotationStore(db).replace_wrapped_data_keys(
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


def _refuse_audit_rows_of(db: SqliteDatabase, user_id: str) -> None:
    """Make every INSERT of an audit row for `user_id` fail (as a full disk would)."""
    with sqlite3.connect(db.path) as conn:
        conn.execute(
            "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events"
            f" WHEN NEW.user_id = '{user_id}' BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
    conn.close()


def _audit_of(user_id: str, action: str) -> AuditRecord:
    return AuditRecord(datetime.now(UTC), "test", user_id, action, ("k",), "ok")


async def test_concurrent_audit_appends_are_committed_together_and_each_awaits_its_commit(
    db: SqliteDatabase,
) -> None:
    commits: list[int] = []
    write_batch = db._audits._write

    async def counting(sql: str, params: Sequence[object]) -> None:
        commits.append(len(params) // 6)
        await write_batch(sql, params)

    db._audits._write = counting
    await asyncio.gather(*(db.append_audit(_audit_of("alice", f"a{i}")) for i in range(50)))
    assert commits == [50]  # one transaction, one durable commit
    with sqlite3.connect(db.path) as conn:  # another process sees every row once they returned
        actions = [row[0] for row in conn.execute("SELECT action FROM audit_events ORDER BY id")]
    conn.close()
    assert actions == [f"a{i}" for i in range(50)]  # in the order they were appended


async def test_a_failed_audit_batch_fails_every_append_in_it_and_writes_none(
    db: SqliteDatabase,
) -> None:
    _refuse_audit_rows_of(db, "mallory")
    users = ["alice", "bob", "mallory", "carol"]
    results = await asyncio.gather(
        *(db.append_audit(_audit_of(user, "resolve")) for user in users), return_exceptions=True
    )
    assert [type(r) for r in results] == [sqlite3.IntegrityError] * len(users)
    assert await db.fetch_all("SELECT user_id FROM audit_events") == []
    await db.append_audit(_audit_of("alice", "later"))  # the next batch is written
    assert await db.fetch_all("SELECT user_id, action FROM audit_events") == [("alice", "later")]


async def test_an_audit_append_whose_caller_gave_up_is_still_written(db: SqliteDatabase) -> None:
    append = asyncio.create_task(db.append_audit(_audit_of("alice", "cancelled")))
    await asyncio.sleep(0)  # queued
    append.cancel()
    with pytest.raises(asyncio.CancelledError):
        await append
    await db.append_audit(_audit_of("alice", "after"))
    actions = [row[0] for row in await db.fetch_all("SELECT action FROM audit_events ORDER BY id")]
    assert actions == ["cancelled", "after"]


async def test_small_reads_fall_back_to_a_reader_thread_while_sqlite_answers_busy(
    db: SqliteDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SqlVaultStore(db)
    await store.put_credential("alice", "k", b"blob", audit=_audit("put"))

    class Busy:
        def execute(self, sql: str, params: object) -> None:
            err = sqlite3.OperationalError("database is locked")
            err.sqlite_errorcode = sqlite3.SQLITE_BUSY  # type: ignore[attr-defined]
            raise err

    monkeypatch.setattr(db, "_inline", Busy())
    assert await store.get_credentials_named("alice", ["k", "absent"]) == {
        "k": StoredCredential(b"blob")
    }
