"""The audit durability model: a `Resolve`'s audit row (and usage counts) committed before the
answer, synced within a bounded interval after; every other write synced before it returns
(store/sqlite_checkpoints.py, store/sqlite_db.py, store/postgres_db.py)."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from aicreds.vault.v1 import credentials_pb2 as cpb
from aicreds.vault.v1.credentials_pb2_grpc import CredentialServiceStub

from services.vault.config import VaultSettings
from services.vault.resolve import ACTION
from services.vault.store import AuditRecord
from services.vault.store.database import insert_audit, parse_utc_text, utc_text
from services.vault.store.location import DatabaseLocation
from services.vault.store.postgres_db import AUDIT_APPLICATION_NAME, PostgresDatabase
from services.vault.store.sqlite_db import SqliteDatabase
from services.vault.store.usage import SqlUsageStore
from services.vault.usage import UsageCounts
from tests.support.databases import open_test_database, raw_fetch
from tests.support.vault import running_vault

LONG = 60.0  # seconds: no background checkpoint runs during the test
WAL_FRAME = 4096 + 24  # a page and its frame header


def _audit(action: str, keys: tuple[str, ...] = ("k",)) -> AuditRecord:
    return AuditRecord(datetime.now(UTC), "test", "alice", action, keys, "ok")


def _actions_in_database_file(db_path: Path, tmp_path: Path) -> list[str] | None:
    """The audit actions the database file holds without its WAL: what a checkpoint has copied
    there. None when the copy caught a checkpoint half-way (try again)."""
    copy = tmp_path / "copy" / "vault.db"
    copy.parent.mkdir(exist_ok=True)
    for leftover in (copy, Path(f"{copy}-wal"), Path(f"{copy}-shm")):
        leftover.unlink(missing_ok=True)
    shutil.copyfile(db_path, copy)
    conn = sqlite3.connect(copy)
    try:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'audit_events'").fetchall():
            return []  # not even the schema copied yet
        return [str(row[0]) for row in conn.execute("SELECT action FROM audit_events ORDER BY id")]
    except sqlite3.DatabaseError:
        return None
    finally:
        conn.close()


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> AsyncIterator[SqliteDatabase]:
    db = await SqliteDatabase.open(tmp_path / "vault.db", sync_interval=LONG)
    try:
        yield db
    finally:
        await db.close()


# -- every backend ------------------------------------------------------------------------------


async def test_a_resolve_is_committed_for_other_processes_before_it_answers(
    tmp_path: Path,
) -> None:
    async with running_vault(tmp_path) as vault:
        manage = CredentialServiceStub(vault.channel("gateway"))
        await manage.ReplaceCredentials(
            cpb.ReplaceCredentialsRequest(user_id="alice", credentials={"k": "sk-durable-1"})
        )
        router = CredentialServiceStub(vault.channel("router"))
        for i in range(3):
            await router.Resolve(cpb.ResolveRequest(user_id="alice", keys=cpb.KeyNames(keys=["k"])))
            # Read at once, by a connection of its own (on SQLite, in another process).
            assert _resolves_seen_elsewhere(vault.files.database) == i + 1


def _resolves_seen_elsewhere(database: DatabaseLocation) -> int:
    sql = "SELECT count(*) FROM audit_events WHERE action = ?"
    if isinstance(database, Path):
        read = (
            f"import sqlite3; conn = sqlite3.connect({str(database)!r});"
            f" print(conn.execute({sql!r}, ({ACTION!r},)).fetchone()[0])"
        )
        out = subprocess.run(
            [sys.executable, "-c", read], capture_output=True, text=True, check=True
        )
        return int(out.stdout)
    return int(raw_fetch(database, sql, (ACTION,))[0][0])


@pytest.mark.no_store
@pytest.mark.parametrize("value", ["0", "-5", "60001", "1.5", "soon"])
def test_a_bad_audit_sync_interval_is_refused_naming_the_setting(value: str) -> None:
    with pytest.raises(ValueError, match="VAULT_AUDIT_SYNC_INTERVAL_MS"):
        VaultSettings.from_env({"VAULT_AUDIT_SYNC_INTERVAL_MS": value})


@pytest.mark.no_store
def test_the_audit_sync_interval_is_read_in_milliseconds() -> None:
    assert VaultSettings.from_env({}).audit_sync_interval_ms == 1000
    settings = VaultSettings.from_env({"VAULT_AUDIT_SYNC_INTERVAL_MS": "250"})
    assert settings.audit_sync_interval_ms == 250


@pytest.mark.no_store
@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 11, 27, 20, 5, 9, 123456, tzinfo=UTC),
        datetime(2026, 1, 1, tzinfo=UTC),  # no fraction: still six digits of it
        datetime(2026, 1, 1, 2, 30, tzinfo=timezone(timedelta(hours=5))),  # the day before
    ],
)
def test_audit_times_are_stored_as_iso_8601_utc_with_microseconds(moment: datetime) -> None:
    # The stored text sorts as it compares, and reads back as the same moment.
    assert utc_text(moment) == moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert parse_utc_text(utc_text(moment)) == moment


# -- SQLite -------------------------------------------------------------------------------------


@pytest.mark.sqlite_only("SQLite's synchronous pragma per connection")
async def test_audit_batches_commit_unsynced_and_every_other_write_synced(
    sqlite_db: SqliteDatabase,
) -> None:
    # synchronous=FULL (2) syncs the WAL in every commit; NORMAL (1) leaves it to checkpoints.
    # Which connection wrote is read from its own count of changed rows.
    writer, audit_writer = sqlite_db._writer, sqlite_db._audit_writer
    inline = sqlite_db._inline_audit
    before = (writer.total_changes, audit_writer.total_changes + inline.total_changes)
    await asyncio.gather(*(sqlite_db.append_audit(_audit(f"resolve{i}")) for i in range(5)))
    await sqlite_db.append_audit(_audit("resolve5"))
    assert writer.total_changes == before[0]
    assert audit_writer.total_changes + inline.total_changes == before[1] + 6
    async with sqlite_db.writing(lock=None) as tx:
        assert await tx.fetch_one("PRAGMA synchronous") == (2,)
        await insert_audit(tx, _audit("credentials.put"))
    assert writer.total_changes == before[0] + 1
    assert (await audit_writer.execute_fetchall("PRAGMA synchronous")) == [(1,)]
    assert inline.execute("PRAGMA synchronous").fetchall() == [(1,)]


def _audit_connections(db: SqliteDatabase) -> tuple[int, int]:
    """Rows written so far through the audit batches' connection on the event loop, and
    through the one on its thread."""
    return db._inline_audit.total_changes, db._audit_writer.total_changes


@pytest.mark.sqlite_only("SQLite's connections")
async def test_an_audit_batch_that_may_start_the_wal_over_is_written_on_the_thread(
    sqlite_db: SqliteDatabase,
) -> None:
    # Such a commit syncs the WAL's new header: never on the event loop. Any other batch is
    # written right on the loop. Either way it is committed for other connections on return.
    other = sqlite3.connect(sqlite_db.path)
    try:
        for round_ in range(2):
            await sqlite_db._checkpoints.checkpoint()  # copies every frame
            before = _audit_connections(sqlite_db)
            await sqlite_db.append_audit(_audit(f"first{round_}"))
            assert _audit_connections(sqlite_db) == (before[0], before[1] + 1)
            await sqlite_db.append_audit(_audit(f"second{round_}"))
            assert _audit_connections(sqlite_db) == (before[0] + 1, before[1] + 1)
            seen = other.execute("SELECT action FROM audit_events ORDER BY id").fetchall()
            assert seen[-2:] == [(f"first{round_}",), (f"second{round_}",)]
    finally:
        other.close()


@pytest.mark.sqlite_only("SQLite's write lock")
async def test_an_audit_batch_waits_on_the_thread_while_another_process_writes(
    sqlite_db: SqliteDatabase,
) -> None:
    await sqlite_db.append_audit(_audit("first"))  # the next batch may go on the event loop
    other = sqlite3.connect(sqlite_db.path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # an operator's command writing meanwhile
        before = _audit_connections(sqlite_db)
        append = asyncio.create_task(sqlite_db.append_audit(_audit("waited")))
        await asyncio.sleep(0.05)
        other.execute("COMMIT")
        await append
        assert _audit_connections(sqlite_db) == (before[0], before[1] + 1)
        seen = other.execute("SELECT action FROM audit_events ORDER BY id").fetchall()
        assert seen[-1] == ("waited",)
    finally:
        other.close()


@pytest.mark.sqlite_only("SQLite's synchronous pragma per connection")
async def test_usage_counts_commit_unsynced_and_a_failed_one_leaves_no_transaction(
    sqlite_db: SqliteDatabase,
) -> None:
    # Usage counts are best effort: a FULL commit of them would hold the write lock through a
    # sync, and every Resolve's audit batch would wait behind it.
    writer, audit_writer = sqlite_db._writer, sqlite_db._audit_writer
    before = (writer.total_changes, audit_writer.total_changes)
    await SqlUsageStore(sqlite_db).add_usage(
        "alice", "2026-11-27", [UsageCounts("p", "m", 5, 6, 1)], max_rows=10
    )
    assert (writer.total_changes, audit_writer.total_changes) == (before[0], before[1] + 1)
    with pytest.raises(RuntimeError):
        async with sqlite_db.writing(lock="alice", synced=False) as tx:
            await insert_audit(tx, _audit("rolled back"))
            raise RuntimeError("the caller's own failure")
    assert not audit_writer.in_transaction
    await sqlite_db.append_audit(_audit("next"))
    assert await sqlite_db.fetch_all("SELECT action FROM audit_events") == [("next",)]


@pytest.mark.sqlite_only("SQLite's automatic checkpoints")
async def test_no_commit_checkpoints_not_even_past_a_thousand_pages(
    sqlite_db: SqliteDatabase, tmp_path: Path
) -> None:
    # SQLite's default runs a checkpoint, with its syncs, inside the commit that takes the WAL
    # past 1,000 pages. Here over 1,500 pages go through both writers, and none of it reaches
    # the database file until the background checkpoint runs.
    keys = tuple(f"key-{i:04d}-" + "x" * 40 for i in range(96))  # ~5 KB of JSON a row
    await asyncio.gather(*(sqlite_db.append_audit(_audit(f"a{i}", keys)) for i in range(600)))
    for i in range(150):
        async with sqlite_db.writing(lock=None) as tx:
            for j in range(4):
                await insert_audit(tx, _audit(f"w{i}.{j}", keys))
    assert Path(f"{sqlite_db.path}-wal").stat().st_size > 1500 * WAL_FRAME
    assert _actions_in_database_file(sqlite_db.path, tmp_path) == []
    await sqlite_db._checkpoints.checkpoint()
    assert len(_actions_in_database_file(sqlite_db.path, tmp_path) or []) == 1200


@pytest.mark.sqlite_only("SQLite's WAL checkpoints")
async def test_the_background_checkpoint_copies_the_wal_with_no_write_to_trigger_it(
    tmp_path: Path,
) -> None:
    db = await SqliteDatabase.open(tmp_path / "vault.db", sync_interval=0.05)
    try:
        await db.append_audit(_audit("resolve"))
        # Nothing writes from here on: only the background task can copy the row. The bound
        # is generous (a busy machine); the interval is 50 ms.
        for _ in range(200):
            if _actions_in_database_file(db.path, tmp_path) == ["resolve"]:
                break
            await asyncio.sleep(0.05)
        assert _actions_in_database_file(db.path, tmp_path) == ["resolve"]
    finally:
        await db.close()


@pytest.mark.sqlite_only("SQLite's WAL checkpoints")
async def test_close_checkpoints_what_was_committed(tmp_path: Path) -> None:
    db = await SqliteDatabase.open(tmp_path / "vault.db", sync_interval=LONG)
    # Another connection stays open, so the vault's are not the last ones: SQLite itself then
    # checkpoints nothing when they close.
    other = sqlite3.connect(db.path)
    try:
        other.execute("SELECT count(*) FROM audit_events").fetchone()
        await db.append_audit(_audit("resolve"))
        assert _actions_in_database_file(db.path, tmp_path) == []
        await db.close()
        assert _actions_in_database_file(db.path, tmp_path) == ["resolve"]
    finally:
        other.close()


@pytest.mark.sqlite_only("SQLite's WAL size")
async def test_a_tick_starts_a_long_wal_over_while_writes_go_on(tmp_path: Path) -> None:
    # A checkpoint beside steady writes never finds every frame copied, and only then does
    # SQLite start the WAL over by itself: without the restart under the write lock, the WAL
    # would hold every frame ever written.
    bound = 64 * WAL_FRAME
    db = await SqliteDatabase.open(
        tmp_path / "vault.db", sync_interval=LONG, wal_restart_bytes=bound
    )
    stop = asyncio.Event()

    async def steady_writes(writer: int) -> None:
        i = 0
        while not stop.is_set():
            await db.append_audit(_audit(f"w{writer}.{i}"))
            i += 1

    writes = [asyncio.create_task(steady_writes(w)) for w in range(4)]
    try:
        while _wal_frames(db.path) < 256:
            await asyncio.sleep(0.01)
        await db._checkpoints.checkpoint()
        await db.append_audit(_audit("next"))  # the next commit starts the WAL over
        frames_after = _wal_frames(db.path)
    finally:
        stop.set()
        await asyncio.gather(*writes)
        await db.close()
    assert frames_after < 128


def _wal_frames(db_path: Path) -> int:
    """The frames in the WAL since it last started over, read from the WAL index's header
    (`mxFrame`, a native 32-bit integer at offset 16 of the -shm file; sqlite.org/walformat),
    which unlike a checkpoint changes nothing."""
    header = Path(f"{db_path}-shm").read_bytes()[:48]
    return int.from_bytes(header[16:20], sys.byteorder)


# -- PostgreSQL ---------------------------------------------------------------------------------


@pytest.mark.postgres_only("PostgreSQL's synchronous_commit per session")
async def test_audit_batches_skip_the_wal_flush_and_every_other_write_waits_for_it(
    tmp_path: Path,
) -> None:
    db = await open_test_database(tmp_path)
    assert isinstance(db, PostgresDatabase)
    try:
        await db.append_audit(_audit("resolve"))
        async with db.writing(lock="alice") as tx:
            assert await tx.fetch_one("SHOW synchronous_commit") == ("on",)
        assert await db.fetch_one("SHOW synchronous_commit") == ("on",)
        async with db.writing(lock="alice", synced=False) as tx:  # usage counts
            assert await tx.fetch_one("SHOW synchronous_commit") == ("off",)
        # The audit batch ran on the audit session (its last statement), and only there is
        # the flush not waited for.
        sessions = await db.fetch_all(
            "SELECT query FROM pg_stat_activity WHERE application_name = ?"
            " AND datname = current_database()",
            (AUDIT_APPLICATION_NAME,),
        )
        assert [str(q).startswith("INSERT INTO audit_events") for (q,) in sessions] == [True]
        assert await db._audit_pool.fetchval("SHOW synchronous_commit") == "off"
    finally:
        await db.close()


async def test_closing_the_database_twice_is_harmless(tmp_path: Path) -> None:
    # A vault stopped twice (a test's outage, then its teardown) closes its database twice.
    db = await open_test_database(tmp_path)
    await db.append_audit(_audit("resolve"))
    await db.close()
    await db.close()


@pytest.mark.sqlite_only("SQLite's WAL restart")
async def test_a_reader_holding_an_old_snapshot_stalls_writes_rarely_and_briefly(
    tmp_path: Path,
) -> None:
    # Another process's long read (a backup, an operator's shell in a transaction) keeps every
    # RESTART from finishing: it used to hold the write lock for a second at every tick. Now a
    # failed RESTART is tried again after 1, 2, 4 ... 32 ticks, each waiting at most 100 ms.
    # Counted, not timed: about 50 ticks pass below; with the back-off a RESTART is tried after
    # 1, 3, 7, 15 and 31 of them, without it at every tick (18 times here, each waiting 100 ms).
    bound = 64 * WAL_FRAME
    db = await SqliteDatabase.open(
        tmp_path / "vault.db", sync_interval=0.05, wal_restart_bytes=bound
    )
    checkpoints = db._checkpoints
    attempts = 0
    restart = checkpoints._restart

    def counted_restart() -> bool:
        nonlocal attempts
        attempts += 1
        return restart()

    checkpoints._restart = counted_restart  # type: ignore[method-assign]
    other = sqlite3.connect(db.path, isolation_level=None)
    try:
        other.execute("BEGIN")
        other.execute("SELECT count(*) FROM audit_events").fetchone()  # keeps its snapshot
        i = 0
        while _wal_frames(db.path) < 200:
            await db.append_audit(_audit(f"fill{i}"))
            i += 1
        attempts = 0
        ticks = 0
        while ticks < 50:
            await db.append_audit(_audit("w"))
            await asyncio.sleep(0.05)
            ticks += 1
    finally:
        other.execute("ROLLBACK")
        other.close()
        await db.close()
    assert 1 <= attempts <= 12  # 5 here; margin for a slow machine; no back-off: 18
