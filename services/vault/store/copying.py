"""Copying a SQLite vault into an empty PostgreSQL database (`aicreds-admin copy-to-postgres`).

Every row of every vault table is copied as stored: ciphertexts, wrapped data keys, token
digests and row seals byte for byte, audit events with their ids. Nothing is decrypted to copy
it, so the copy needs no key; the keyring is needed only to verify the result.

The whole copy is one PostgreSQL transaction, which also holds the verification: the row counts
of each table on both sides, and a sample of users (up to `SAMPLE_USERS`) whose data key,
credential values, provider headers and token seals must open with the keyring, read back from
the copy through the vault's own stores and open path. The transaction commits only when the
verification passes, so a failure of any kind leaves the target's tables empty (its schema is
migrated before the copy and stays).

Both schemas must be at the same version (the PostgreSQL migrations carry SQLite's numbers): a
SQLite file from an older release is first opened once by this release's vault (or `aicreds-admin
keys list`), which migrates it. The source is read in one read transaction, so a vault still
writing to it cannot make the copy inconsistent; stop it anyway, or its later writes are not
copied.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from services.vault.credentials import open_credential
from services.vault.envelope import Envelope
from services.vault.errors import DecryptionFailed, ProviderIntegrityError, UnknownMasterKey
from services.vault.keyring import KeyringSource
from services.vault.providers import open_provider
from services.vault.row_seals import TOKEN_ROW, RowSealer
from services.vault.store.database import Row, Transaction
from services.vault.store.location import PostgresUrl
from services.vault.store.migrations import MIGRATIONS
from services.vault.store.postgres_db import POSTGRES, PostgresDatabase, PostgresTransaction
from services.vault.store.tokens import SqlAuthStore
from services.vault.store.vault_tables import SqlVaultStore

SCHEMA_VERSION = MIGRATIONS[-1].version
"""The SQLite schema version this release knows; the copy maps it to the same PostgreSQL one."""

TABLES = (
    "data_keys",
    "master_key_checks",
    "credentials",
    "providers",
    "provider_models",
    "api_tokens",
    "sessions",
    "audit_events",
    "row_seal_pending",
    "usage_daily",
)
"""Every vault table, in an order that copies a row after the rows it references."""

SAMPLE_USERS = 20
# Waiting longer than this for the target's tables means something else (a vault?) uses them.
_LOCK_TIMEOUT = "10s"


class CopyRefused(Exception):
    """The copy was refused or failed; nothing was written to the target's tables. The message
    is for the operator: it names tables, users and keys, never a value, token or password."""


@dataclass(frozen=True)
class TableCount:
    """The rows of one table in the SQLite file and in PostgreSQL after the copy."""

    table: str
    sqlite_rows: int
    postgres_rows: int


@dataclass(frozen=True)
class CopyReport:
    """What was copied and verified (committed)."""

    schema_version: int
    tables: tuple[TableCount, ...]
    sampled_users: int
    credentials_opened: int
    providers_opened: int
    token_seals_checked: int


async def copy_to_postgres(source: Path, target: PostgresUrl, keyring: KeyringSource) -> CopyReport:
    """Copy the SQLite vault at `source` into the empty PostgreSQL database `target` and verify
    it with `keyring`; committed only if the verification passes.

    Raises:
        CopyRefused: the file is missing or not a vault of this schema version, the target is
            unreachable or not empty, or the verification failed (nothing is left copied).
        StartupRefused: the target's schema is newer than this release knows.
    """
    with _SqliteReader(source) as sqlite:
        sqlite_counts = {t: _sqlite_count(sqlite, t) for t in TABLES}
        # Migrate (and refuse a newer schema) the way the vault does at start.
        await (await PostgresDatabase.open(target, pool_size=1)).close()
        async with _connect(target) as conn, conn.transaction():
            await _lock_and_check_empty(conn)
            for table in TABLES:
                await _copy_table(sqlite, conn, table)
            await conn.execute(
                "SELECT setval(pg_get_serial_sequence('audit_events', 'id'),"
                " COALESCE((SELECT max(id) FROM audit_events), 1),"
                " (SELECT max(id) FROM audit_events) IS NOT NULL)"
            )
            counts = []
            for table in TABLES:
                row = await conn.fetchrow(f"SELECT count(*) FROM {table}")
                counts.append(TableCount(table, sqlite_counts[table], int(row[0]) if row else 0))
            differing = [c for c in counts if c.sqlite_rows != c.postgres_rows]
            if differing:
                raise CopyRefused(
                    "verification failed: row counts differ ("
                    + ", ".join(
                        f"{c.table}: {c.sqlite_rows} in SQLite, {c.postgres_rows} in PostgreSQL"
                        for c in differing
                    )
                    + "); nothing was written"
                )
            sample = await _verify_sample(conn, keyring)
    return CopyReport(SCHEMA_VERSION, tuple(counts), *sample)


# -- the source -------------------------------------------------------------------------------


class _SqliteReader:
    """The SQLite file opened read-only, in one read transaction (a consistent snapshot)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None

    def __enter__(self) -> sqlite3.Connection:
        if not self._path.is_file():
            raise CopyRefused(f"no SQLite file at {self._path}")
        uri = self._path.resolve().as_uri() + "?mode=ro"
        try:
            conn = sqlite3.connect(uri, uri=True, isolation_level=None)
        except sqlite3.Error as err:
            raise CopyRefused(f"cannot open {self._path}: {err}") from None
        self._conn = conn
        try:
            conn.execute("BEGIN")
            _check_sqlite_schema(conn, self._path)
        except sqlite3.Error as err:
            conn.close()
            raise CopyRefused(f"{self._path} is not a readable SQLite vault: {err}") from None
        except BaseException:
            conn.close()
            raise
        return conn

    def __exit__(self, *exc: object) -> None:
        if self._conn is not None:
            self._conn.close()


def _check_sqlite_schema(conn: sqlite3.Connection, path: Path) -> None:
    tables = {
        str(row[0])
        for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    }
    if "schema_migrations" not in tables:
        raise CopyRefused(f"{path} is not a vault database (it has no schema_migrations table)")
    versions = sorted(int(row[0]) for row in conn.execute("SELECT version FROM schema_migrations"))
    if versions != [m.version for m in MIGRATIONS]:
        newest = versions[-1] if versions else 0
        raise CopyRefused(
            f"{path} has schema version {newest}; this release copies version {SCHEMA_VERSION}"
            " only: "
            + (
                "open it once with this release's vault (or `aicreds-admin keys list`) to migrate"
                " it, then copy"
                if newest < SCHEMA_VERSION
                else "use the release that wrote it"
            )
        )
    unknown = sorted(tables - set(TABLES) - {"schema_migrations"})
    missing = sorted(set(TABLES) - tables)
    if unknown or missing:
        raise CopyRefused(
            f"{path} does not hold the vault's tables (unknown: {unknown or 'none'}, missing:"
            f" {missing or 'none'})"
        )


def _sqlite_count(conn: sqlite3.Connection, table: str) -> int:
    row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(row[0])


def _sqlite_columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [str(row[1]) for row in conn.execute(f"PRAGMA table_info({table})")]


# -- the target -------------------------------------------------------------------------------


@asynccontextmanager
async def _connect(url: PostgresUrl) -> AsyncIterator[asyncpg.Connection[asyncpg.Record]]:
    """One connection for the copy: no statement timeout (a large copy takes its time), a
    lock timeout (tables in use by a running vault are refused, not waited for)."""
    try:
        conn: asyncpg.Connection[asyncpg.Record] = await asyncpg.connect(
            url.url,
            server_settings={
                "application_name": "aicreds-admin",
                "statement_timeout": "0",
                "lock_timeout": _LOCK_TIMEOUT,
            },
        )
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
        raise CopyRefused(
            f"cannot open the PostgreSQL database {url.redacted}: {type(err).__name__}:"
            f" {url.scrub(str(err))}"
        ) from None
    try:
        yield conn
    except asyncpg.LockNotAvailableError:
        raise CopyRefused(
            f"the vault tables of {url.redacted} are in use (a vault running on it?); stop it"
            " and copy again"
        ) from None
    finally:
        await conn.close()


async def _lock_and_check_empty(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    # Nothing else may write these tables until the copy commits: a vault started meanwhile
    # waits, then finds the copy.
    await conn.execute(f"LOCK TABLE {', '.join(TABLES)} IN EXCLUSIVE MODE")
    applied = await conn.fetchval("SELECT max(version) FROM schema_migrations")
    if applied != SCHEMA_VERSION:
        raise CopyRefused(
            f"the PostgreSQL schema is at version {applied}, the SQLite one at {SCHEMA_VERSION}"
        )
    for table in TABLES:
        if await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {table})"):
            raise CopyRefused(
                f"the PostgreSQL database is not empty: table {table} holds rows; copy only into"
                " a new database (nothing was written)"
            )


async def _copy_table(
    sqlite: sqlite3.Connection, conn: asyncpg.Connection[asyncpg.Record], table: str
) -> None:
    columns = _sqlite_columns(sqlite, table)
    target_columns = {
        str(row[0])
        for row in await conn.fetch(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = $1",
            table,
        )
    }
    if set(columns) != target_columns:
        raise CopyRefused(
            f"table {table} has other columns in PostgreSQL than in SQLite"
            f" ({sorted(target_columns ^ set(columns))}); nothing was written"
        )
    try:
        rows = sqlite.execute(f"SELECT {', '.join(columns)} FROM {table}")
        await conn.copy_records_to_table(table, records=rows, columns=columns)
    except (
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
        sqlite3.Error,  # e.g. text that is not UTF-8, whose message would quote it
        TypeError,
        ValueError,
    ) as err:
        # Never the error's text: a data error may quote the value it could not encode.
        raise CopyRefused(
            f"copying table {table} failed ({type(err).__name__}"
            f"{' ' + err.sqlstate if isinstance(err, asyncpg.PostgresError) else ''});"
            " nothing was written"
        ) from None


# -- verification -----------------------------------------------------------------------------


class _CopyReads:
    """The copy's own transaction as a read-only `Database`, so that the vault's stores read
    back what it wrote before it commits."""

    dialect = POSTGRES

    def __init__(self, conn: asyncpg.Connection[asyncpg.Record]) -> None:
        self._tx = PostgresTransaction(conn)

    @asynccontextmanager
    async def writing(self, *, lock: str | None, synced: bool = True) -> AsyncIterator[Transaction]:
        raise RuntimeError("the copy's verification only reads")
        yield self._tx  # pragma: no cover - unreachable; makes this a generator

    async def fetch_all(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        return await self._tx.fetch_all(sql, params)

    async def fetch_one(self, sql: str, params: Sequence[object] = ()) -> Row | None:
        return await self._tx.fetch_one(sql, params)

    async def fetch_small(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        return await self._tx.fetch_all(sql, params)

    async def append_audit(self, record: object) -> None:
        raise RuntimeError("the copy's verification only reads")

    async def close(self) -> None:
        return None


async def _verify_sample(
    conn: asyncpg.Connection[asyncpg.Record], keyring: KeyringSource
) -> tuple[int, int, int, int]:
    """(users, credentials, providers, token seals) of the sample that opened with the keyring.

    Raises:
        CopyRefused: the keyring lacks a master key the rows use, or something does not open.
    """
    db = _CopyReads(conn)
    store = SqlVaultStore(db)
    missing = sorted(await store.master_key_ids_in_use() - set(keyring.current.key_ids))
    if missing:
        raise CopyRefused(
            f"verification failed: the keyring file lacks master key(s) {missing} that the"
            " copied rows use; give the vault's own keyring (VAULT_KEYRING_FILE); nothing was"
            " written"
        )
    envelope = Envelope(store, keyring)
    tokens = SqlAuthStore(db, RowSealer(keyring))
    tokens_unsealed = bool(
        await db.fetch_one("SELECT 1 FROM row_seal_pending WHERE kind = ?", (TOKEN_ROW,))
    )
    # A spread of users that does not depend on how their ids sort.
    users = [
        str(row[0])
        for row in await db.fetch_all(
            "SELECT user_id FROM data_keys ORDER BY md5(user_id) LIMIT ?", (SAMPLE_USERS,)
        )
    ]
    credentials = providers = seals = 0
    for user in users:
        what = f"the data key of user {user!r}"
        try:
            opener = await envelope.opener_for(user)
            for key, stored in (await store.get_credentials(user)).items():
                what = f"credential {key!r} of user {user!r}"
                open_credential(opener, key, stored)
                credentials += 1
            for record in await store.list_providers(user):
                what = f"provider {record.name!r} of user {user!r}"
                open_provider(record, opener)
                providers += 1
        except (DecryptionFailed, UnknownMasterKey, ProviderIntegrityError):
            raise CopyRefused(
                f"verification failed: {what} does not open with the keyring file (a wrong"
                " keyring?); nothing was written"
            ) from None
        if not tokens_unsealed:
            stored_tokens = await db.fetch_all(
                "SELECT count(*) FROM api_tokens WHERE user_id = ?", (user,)
            )
            sealed = len(await tokens.list_tokens(user))
            if sealed != int(stored_tokens[0][0]):
                raise CopyRefused(
                    f"verification failed: {int(stored_tokens[0][0]) - sealed} API token(s) of user"
                    f" {user!r} fail their seal check with the keyring file; nothing was written"
                )
            seals += sealed
    return len(users), credentials, providers, seals
