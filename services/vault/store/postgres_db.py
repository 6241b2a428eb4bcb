"""PostgreSQL plumbing: a pool of connections, transactions, advisory locks and migrations.

Several vault replicas share one database. Each write transaction runs at READ COMMITTED and,
when it names a lock (`writing(lock=user_id)`), first takes a transaction-scoped advisory lock on
that name, so read-modify-writes of one user's rows (limit checks, replace-all, revocation
cascades) run one at a time across every replica, as they do in SQLite's single writer; writes
of different users run side by side. Their commits are durable before they are acknowledged
(`synchronous_commit` stays `on`).

Audit batches (`audit_batches`: every `Resolve`) are the exception, as on SQLite: they run on a
connection of their own whose session has `synchronous_commit = off`. A batch is committed
(visible to every replica) before its appends return, but does not wait for the flush of the
server's WAL, which the server's WAL writer does within 3 x `wal_writer_delay` (200 ms by
default); a crash of the server or its machine inside that window can lose it, never corrupt
anything. Every other write is unaffected: the setting belongs to that one session. A write
transaction that asks for the same (`writing(synced=False)`: usage counts) sets it for itself
with `SET LOCAL`.

asyncpg prepares every statement on first use and keeps it in each connection's statement cache,
so the hot path (`Resolve`, `Authenticate`) runs prepared statements. Every statement has a
server-side `statement_timeout`. TLS follows the URL's `sslmode`.

Migrations run at start under a session advisory lock, so replicas that start together apply
each migration once; a database migrated past what this vault knows is refused.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Union

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from services.vault.errors import DatabaseUnavailable, StartupRefused
from services.vault.store import AuditRecord
from services.vault.store.audit_batches import AuditBatches
from services.vault.store.database import Dialect, Row, check_known_schema, utc_text
from services.vault.store.location import PostgresUrl
from services.vault.store.migrations import Migration
from services.vault.store.postgres_schema import POSTGRES_MIGRATIONS

# asyncpg logs nothing with parameters, but keep it as quiet as aiosqlite (sqlite_db).
logging.getLogger("asyncpg").setLevel(logging.WARNING)

POSTGRES = Dialect(
    name="postgresql",
    octet_length="octet_length({})",
    byte_at_1="get_byte({0}, 1)",
    byte_at_0="get_byte({0}, 0)",
)

DEFAULT_POOL_SIZE = 10
AUDIT_APPLICATION_NAME = "aicreds-vault-audit"
"""The audit batches' connection, as `pg_stat_activity` names it (the others: aicreds-vault)."""
DEFAULT_STATEMENT_TIMEOUT_MS = 5000
# Advisory lock names live in one 64-bit space per database, shared with other applications:
# ours all start with this.
_LOCK_PREFIX = "aicreds:vault:"
_MIGRATION_LOCK = _LOCK_PREFIX + "migrations"
_TAKE_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))"
_PLACEHOLDER = re.compile(r"\?(\d*)")
_Connection = Union["asyncpg.Connection[asyncpg.Record]", "PoolConnectionProxy[asyncpg.Record]"]


@functools.lru_cache(maxsize=512)
def to_postgres(sql: str) -> str:
    """The statement with SQLite's placeholders (`?`, `?N`) as PostgreSQL's (`$N`). Our SQL
    holds no `?` inside a string literal."""
    counter = 0

    def number(match: re.Match[str]) -> str:
        nonlocal counter
        if match.group(1):
            return "$" + match.group(1)
        counter += 1
        return f"${counter}"

    return _PLACEHOLDER.sub(number, sql)


# What says the database, not the request, failed: the server unreachable or gone, a dropped
# connection, a statement cancelled by `statement_timeout`, the server refusing connections, a
# deadlock the server broke.
_UNAVAILABLE = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.QueryCanceledError,
    asyncpg.AdminShutdownError,
    # Two transactions that waited for each other, one of them ended by the server: nothing of
    # it was written, and the same request again succeeds.
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
)


@contextmanager
def _availability() -> Iterator[None]:
    """Report the database's unavailability as `DatabaseUnavailable` (the one place this
    backend maps driver errors); other errors pass through unchanged."""
    try:
        yield
    except _UNAVAILABLE as err:
        raise DatabaseUnavailable(
            f"the vault's database is unavailable ({type(err).__name__})"
        ) from None


def _changed_rows(status: str) -> int:
    """Rows a statement changed, from its command tag ("UPDATE 3", "INSERT 0 1")."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


class PostgresTransaction:
    """An open write transaction on one pooled connection (`database.Transaction`)."""

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Sequence[object] = ()) -> int:
        return _changed_rows(await self._conn.execute(to_postgres(sql), *params))

    async def execute_many(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        if rows:
            await self._conn.executemany(to_postgres(sql), rows)

    async def fetch_all(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        return [tuple(row) for row in await self._conn.fetch(to_postgres(sql), *params)]

    async def fetch_one(self, sql: str, params: Sequence[object] = ()) -> Row | None:
        row = await self._conn.fetchrow(to_postgres(sql), *params)
        return tuple(row) if row is not None else None


class PostgresDatabase:
    """An open PostgreSQL database (`database.Database`)."""

    dialect = POSTGRES

    def __init__(
        self,
        url: PostgresUrl,
        pool: asyncpg.Pool[asyncpg.Record],
        audit_pool: asyncpg.Pool[asyncpg.Record],
    ) -> None:
        self.url = url
        self._pool = pool
        # One connection, `synchronous_commit = off`: audit batches only, one at a time.
        self._audit_pool = audit_pool
        self._audits = AuditBatches(self._write_audit_batch)

    def __repr__(self) -> str:
        return f"PostgresDatabase(url={self.url.redacted!r})"

    @classmethod
    async def open(
        cls,
        url: PostgresUrl,
        *,
        pool_size: int = DEFAULT_POOL_SIZE,
        statement_timeout_ms: int = DEFAULT_STATEMENT_TIMEOUT_MS,
        migrations: Sequence[Migration] = POSTGRES_MIGRATIONS,
    ) -> PostgresDatabase:
        """Connect a pool and migrate the database.

        Raises:
            StartupRefused: the server cannot be reached or refuses the login (the message
                names the URL without its password), or its schema is newer than we know.
        """
        settings = {
            "application_name": "aicreds-vault",
            "statement_timeout": str(statement_timeout_ms),
        }
        try:
            # Migrations on a connection of their own: its session advisory lock never reaches
            # a pooled connection.
            conn = await asyncpg.connect(url.url, server_settings=settings)
            try:
                await _migrate(conn, migrations)
            finally:
                await conn.close()
            pool = await asyncpg.create_pool(
                url.url,
                min_size=1,
                max_size=pool_size,
                server_settings=settings,
                reset=_end_open_transaction,
            )
            try:
                audit_pool = await asyncpg.create_pool(
                    url.url,
                    min_size=1,
                    max_size=1,
                    server_settings={
                        **settings,
                        "application_name": AUDIT_APPLICATION_NAME,
                        "synchronous_commit": "off",
                    },
                    reset=_end_open_transaction,
                )
            except BaseException:
                await pool.close()
                raise
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
            raise StartupRefused(
                f"cannot open the PostgreSQL database {url.redacted}: {type(err).__name__}:"
                f" {url.scrub(str(err))}"
            ) from None
        return cls(url, pool, audit_pool)

    async def close(self) -> None:
        await self._audits.drain()  # appends under way are written first
        try:
            await self._audit_pool.close()
        finally:
            await self._pool.close()

    @asynccontextmanager
    async def writing(
        self, *, lock: str | None, synced: bool = True
    ) -> AsyncIterator[PostgresTransaction]:
        with _availability():
            async with self._pool.acquire() as conn, conn.transaction():
                if not synced:
                    await conn.execute("SET LOCAL synchronous_commit = off")
                if lock is not None:
                    await conn.execute(_TAKE_LOCK, _LOCK_PREFIX + lock)
                yield PostgresTransaction(conn)

    async def append_audit(self, record: AuditRecord) -> None:
        await self._audits.append(record)

    async def _write_audit_batch(self, sql: str, params: Sequence[object]) -> None:
        # One statement outside a transaction block is one transaction: atomic, committed on
        # return, flushed by the WAL writer soon after (this session's synchronous_commit=off).
        with _availability():
            await self._audit_pool.execute(to_postgres(sql), *params)

    async def fetch_all(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        with _availability():
            rows = await self._pool.fetch(to_postgres(sql), *params)
        return [tuple(row) for row in rows]

    async def fetch_small(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        return await self.fetch_all(sql, params)

    async def fetch_one(self, sql: str, params: Sequence[object] = ()) -> Row | None:
        with _availability():
            row = await self._pool.fetchrow(to_postgres(sql), *params)
        return tuple(row) if row is not None else None


async def _end_open_transaction(conn: _Connection) -> None:
    """What a connection needs on its way back to the pool. The vault leaves no session state
    on pooled connections (advisory locks are transaction-scoped, no SET, LISTEN or cursors),
    so asyncpg's default reset (unlock all, CLOSE ALL, UNLISTEN, RESET ALL: one round trip per
    statement the pool runs) is replaced by this: a rollback only if a cancelled caller left a
    transaction open."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


async def _migrate(conn: _Connection, migrations: Sequence[Migration]) -> None:
    versions = [m.version for m in migrations]
    if versions != sorted(set(versions)):
        raise ValueError("migrations must have distinct, increasing versions")
    # A session lock: held across the migrations' own transactions, released below (or when
    # the connection closes, if this process dies meanwhile).
    await conn.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", _MIGRATION_LOCK)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
            ' name TEXT NOT NULL, applied_at TEXT COLLATE "C" NOT NULL)'
        )
        applied = {int(row[0]) for row in await conn.fetch("SELECT version FROM schema_migrations")}
        check_known_schema(sorted(applied), versions, "PostgreSQL")
        for migration in migrations:
            if migration.version in applied:
                continue
            async with conn.transaction():
                for statement in migration.statements:
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    utc_text(),
                )
    finally:
        await conn.execute("SELECT pg_advisory_unlock(hashtextextended($1, 0))", _MIGRATION_LOCK)
