"""SQLite plumbing: one writer connection, two for audit batches, readers, pragmas, migrations.

WAL mode lets readers run while the writer writes. All writes go through the writer
connections under one asyncio lock, each in a `BEGIN IMMEDIATE` transaction (or one statement),
so concurrent requests never interleave and never lose an update. A `busy_timeout` lets an
operator command in another process write too.

Durability has two classes (docs/architecture.md, "Audit durability"):

- Credentials, providers, keys, tokens, sessions and every other write transaction: the writer
  runs with `synchronous=FULL`, so a commit is synced to disk before it is acknowledged
  (SPEC 4.4).
- Audit rows appended on their own (every `Resolve`; see `audit_batches`), and the transactions
  that ask for it (`writing(synced=False)`: usage counts): on connections with
  `synchronous=NORMAL` (an audit batch mostly on one used right on the event loop, see
  `_write_audit_batch`), under the same asyncio lock. An audit batch is one statement in
  autocommit mode, so one atomic transaction in the WAL. Such a commit is visible to every
  connection and process, and kept through a crash of the vault, before it returns, but does
  not wait for a sync that another process's writes to the same disk can hold up for tens of
  milliseconds. `sqlite_checkpoints` syncs it within the configured interval
  (`VAULT_AUDIT_SYNC_INTERVAL_MS`); only a power loss or OS crash inside that window can lose it.

No connection checkpoints automatically: `sqlite_checkpoints` does, off the request path.
`writing(lock=...)` ignores its lock: one write runs at a time here anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import aiosqlite

from services.common.callers import refuse_shared_file
from services.vault.errors import StartupRefused
from services.vault.store import AuditRecord
from services.vault.store.audit_batches import AuditBatches
from services.vault.store.database import Dialect, Row, check_known_schema, utc_text
from services.vault.store.migrations import MIGRATIONS, Migration
from services.vault.store.sqlite_checkpoints import (
    DEFAULT_RESTART_BYTES,
    DEFAULT_SYNC_INTERVAL_MS,
    BackgroundCheckpoints,
    wal_size_limit,
)

_BUSY_TIMEOUT_MS = 10_000
# aiosqlite logs every statement with its parameters at DEBUG: ciphertexts, wrapped data keys,
# token digests. None of that may reach a log line, whatever level the vault runs at.
logging.getLogger("aiosqlite").setLevel(logging.WARNING)
T = TypeVar("T")

SQLITE = Dialect(
    name="sqlite",
    octet_length="length(CAST({} AS BLOB))",
    byte_at_1="unicode(CAST(substr({0}, 2, 1) AS TEXT))",
    byte_at_0="unicode(CAST(substr({0}, 1, 1) AS TEXT))",
)


async def _connect(
    path: Path, *, synchronous: str = "FULL", wal_restart_bytes: int = DEFAULT_RESTART_BYTES
) -> aiosqlite.Connection:
    conn = await aiosqlite.connect(path, isolation_level=None)
    try:
        await conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        await conn.execute("PRAGMA journal_mode = WAL")
        await conn.execute(f"PRAGMA synchronous = {synchronous}")
        await conn.execute("PRAGMA wal_autocheckpoint = 0")  # `sqlite_checkpoints` does them
        # A WAL that an outsized transaction grew is cut back when it starts over.
        await conn.execute(f"PRAGMA journal_size_limit = {wal_size_limit(wal_restart_bytes)}")
        await conn.execute("PRAGMA foreign_keys = ON")
    except BaseException:
        await conn.close()
        raise
    return conn


def _connect_on_loop(path: Path, *pragmas: str) -> sqlite3.Connection:
    """A connection used right on the event loop's thread, with no busy timeout (a statement
    that meets another process's lock fails at once, and its caller goes to a thread instead),
    auto-checkpoint off, and `pragmas`."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for pragma in ("busy_timeout = 0", "wal_autocheckpoint = 0", *pragmas):
            conn.execute(f"PRAGMA {pragma}")
    except BaseException:
        conn.close()
        raise
    return conn


class SqliteDatabase:
    """An open SQLite database (`database.Database`)."""

    dialect = SQLITE

    def __init__(
        self,
        path: Path,
        writer: aiosqlite.Connection,
        audit_writer: aiosqlite.Connection,
        readers: Sequence[aiosqlite.Connection],
        inline: sqlite3.Connection,
        inline_audit: sqlite3.Connection,
        write_lock: asyncio.Lock,
        checkpoints: BackgroundCheckpoints,
    ) -> None:
        self.path = path
        self._writer = writer
        self._audit_writer = audit_writer  # synchronous=NORMAL: audit batches only
        self._write_lock = write_lock
        self._checkpoints = checkpoints
        self._audits = AuditBatches(self._write_audit_batch)
        self._all_readers = tuple(readers)
        self._readers: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
        for reader in readers:
            self._readers.put_nowait(reader)
        # Both used on the event loop's thread only, which opened them.
        self._inline = inline
        self._inline_audit = inline_audit

    def __repr__(self) -> str:
        return f"SqliteDatabase(path={str(self.path)!r})"

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        readers: int = 3,
        migrations: Sequence[Migration] = MIGRATIONS,
        sync_interval: float = DEFAULT_SYNC_INTERVAL_MS / 1000,
        wal_restart_bytes: int = DEFAULT_RESTART_BYTES,
    ) -> SqliteDatabase:
        """Open (creating, mode 0600) and migrate the database at `path`; checkpoint it every
        `sync_interval` seconds in the background (the most an audit row waits for its sync),
        starting the WAL over once it is larger than `wal_restart_bytes`.

        Raises:
            StartupRefused: the database (or its WAL or shared-memory file) may be read or
                written by group or others: it holds every wrapped key and ciphertext.
        """
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        for candidate in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            try:
                refuse_shared_file(candidate, "database file")
            except ValueError as err:
                raise StartupRefused(str(err)) from None
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        opened: list[aiosqlite.Connection] = []
        inline: list[sqlite3.Connection] = []
        try:
            writer = await _connect(path, wal_restart_bytes=wal_restart_bytes)
            opened.append(writer)
            await _migrate(writer, migrations)
            opened.append(
                await _connect(path, synchronous="NORMAL", wal_restart_bytes=wal_restart_bytes)
            )
            for _ in range(readers):
                opened.append(await _connect(path))
            # `fetch_small`'s reads (read-only), and the audit batches written on the loop
            # (`_write_audit_batch`: synchronous=NORMAL, as on the audit batches' thread).
            inline.append(_connect_on_loop(path, "query_only = ON", "synchronous = FULL"))
            inline.append(
                _connect_on_loop(
                    path,
                    "synchronous = NORMAL",
                    f"journal_size_limit = {wal_size_limit(wal_restart_bytes)}",
                    "foreign_keys = ON",
                )
            )
            write_lock = asyncio.Lock()
            checkpoints = await BackgroundCheckpoints.start(
                path, sync_interval, write_lock, restart_bytes=wal_restart_bytes
            )
        except BaseException:
            for conn in opened:
                await conn.close()
            for connection in inline:
                connection.close()
            raise
        reads, audits = inline
        return cls(path, writer, opened[1], opened[2:], reads, audits, write_lock, checkpoints)

    async def close(self) -> None:
        """Close, once the appends under way are written and a last checkpoint synced them."""
        await self._audits.drain()
        try:
            await self._checkpoints.close()
        finally:
            for conn in (*self._all_readers, self._audit_writer, self._writer):
                await conn.close()
            self._inline.close()
            self._inline_audit.close()

    @asynccontextmanager
    async def writing(
        self, *, lock: str | None, synced: bool = True
    ) -> AsyncIterator[SqliteTransaction]:
        """A write transaction: committed on exit (and synced to disk first, unless `synced` is
        False: then on the audit batches' connection, synced by the background checkpoints),
        rolled back on any error.

        The connection is never left inside a transaction when the lock is released: a statement
        handed to aiosqlite runs on its thread even if the awaiting RPC is cancelled (a client
        deadline while another process holds the database lock), so BEGIN, COMMIT and ROLLBACK
        are awaited to the end and a transaction that a cancelled BEGIN opened is rolled back.
        Otherwise every later write would fail with "cannot start a transaction within a
        transaction" and the database lock would be held for good.
        """
        conn = self._writer if synced else self._audit_writer
        async with self._write_lock:
            try:
                await _to_the_end(conn.execute("BEGIN IMMEDIATE"))
            except BaseException:
                await _end_transaction(conn)
                raise
            try:
                yield SqliteTransaction(conn)
            except BaseException:
                await _end_transaction(conn)
                raise
            try:
                await _to_the_end(conn.execute("COMMIT"))
            except BaseException:
                # A failed COMMIT (disk full, I/O error) can leave the transaction open.
                await _end_transaction(conn)
                raise

    async def append_audit(self, record: AuditRecord) -> None:
        await self._audits.append(record)

    async def _write_audit_batch(self, sql: str, params: Sequence[object]) -> None:
        # In autocommit mode one statement is one transaction (atomic; committed, unsynced, on
        # a `synchronous=NORMAL` connection). It holds the write lock like any write
        # transaction, so it never waits on SQLite's own lock for another of our writes.
        async with self._write_lock:
            if not self._checkpoints.next_commit_may_sync:
                # Right here on the event loop: such a commit appends the batch to the WAL and
                # syncs nothing, which costs less than a trip to a thread and back (a thread
                # wake-up, a hand-off of the interpreter lock, an event-loop wake-up, for each
                # batch: at low load, each Resolve). With no busy timeout: if another process
                # holds SQLite's write lock, the batch goes to the thread, which waits.
                try:
                    self._inline_audit.execute(sql, params).close()
                    return
                except sqlite3.OperationalError as err:
                    if err.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                        raise
            # The commit that starts the WAL over syncs its new header (even at NORMAL), which
            # a busy disk can hold up for long: on the thread, where only its batch waits.
            # execute_fetchall runs the statement and drops its cursor there, in one trip.
            await _to_the_end(self._audit_writer.execute_fetchall(sql, params))
            self._checkpoints.committed()

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[aiosqlite.Connection]:
        """A reader connection (each statement sees a committed snapshot)."""
        conn = await self._readers.get()
        try:
            yield conn
        finally:
            self._readers.put_nowait(conn)

    async def fetch_all(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        # One trip to the connection's thread (execute, fetch and close there), not three: each
        # trip is a thread hop and an event-loop wake-up, which dominated `Resolve`'s cost.
        async with self.reading() as conn:
            return [tuple(row) for row in await conn.execute_fetchall(sql, params)]

    async def fetch_small(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        """A small indexed read (a few rows, found by key), run right here on the event loop.

        A trip to a reader's thread costs far more CPU than such a read (a thread wake-up, a
        hand-off of the GIL, an event-loop wake-up). In WAL mode a reader takes no lock that a
        writer holds, so the read does not wait for writes; the connection has no busy timeout,
        so in the rare case that SQLite answers SQLITE_BUSY (another process recovering the
        WAL), the read goes to a reader's thread instead, which waits. Only for reads whose
        size the caller bounds: a large result would hold up every other request meanwhile.
        """
        try:
            return self._inline.execute(sql, params).fetchall()
        except sqlite3.OperationalError as err:
            if err.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                raise
        return await self.fetch_all(sql, params)

    async def fetch_one(self, sql: str, params: Sequence[object] = ()) -> Row | None:
        async with self.reading() as conn, conn.execute(sql, params) as cursor:
            row = await cursor.fetchone()
            return tuple(row) if row is not None else None


async def _end_transaction(conn: aiosqlite.Connection) -> None:
    """Roll back the connection's open transaction, if any; never raises over the caller's
    error."""
    if conn.in_transaction:
        with contextlib.suppress(Exception):
            await _to_the_end(conn.execute("ROLLBACK"))


async def _to_the_end(statement: Awaitable[T]) -> T:
    """Await a writer statement to its end even if the caller is cancelled meanwhile (the
    statement runs on aiosqlite's thread regardless); then re-raise the cancellation."""
    task = asyncio.ensure_future(statement)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
        except BaseException:
            break  # the statement failed: reported below
    if cancelled:
        task.exception()  # retrieved: the cancellation is what the caller gets
        raise asyncio.CancelledError
    return task.result()


async def _migrate(conn: aiosqlite.Connection, migrations: Sequence[Migration]) -> None:
    versions = [m.version for m in migrations]
    if versions != sorted(set(versions)):
        raise ValueError("migrations must have distinct, increasing versions")
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    applied = [
        int(row[0]) for row in await conn.execute_fetchall("SELECT version FROM schema_migrations")
    ]
    check_known_schema(applied, versions, "SQLite")
    for migration in migrations:
        await conn.execute("BEGIN IMMEDIATE")
        try:
            async with conn.execute(
                "SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,)
            ) as cursor:
                done = await cursor.fetchone() is not None
            if not done:
                for statement in migration.statements:
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (migration.version, migration.name, utc_text()),
                )
        except BaseException:
            await conn.execute("ROLLBACK")
            raise
        await conn.execute("COMMIT")


class SqliteTransaction:
    """The open write transaction on the writer connection (`database.Transaction`)."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Sequence[object] = ()) -> int:
        cursor = await self._conn.execute(sql, params)
        changed: int = cursor.rowcount
        await cursor.close()
        return max(changed, 0)

    async def execute_many(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        await self._conn.executemany(sql, rows)

    async def fetch_all(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        return [tuple(row) for row in await self._conn.execute_fetchall(sql, params)]

    async def fetch_one(self, sql: str, params: Sequence[object] = ()) -> Row | None:
        async with self._conn.execute(sql, params) as cursor:
            row = await cursor.fetchone()
        return tuple(row) if row is not None else None
