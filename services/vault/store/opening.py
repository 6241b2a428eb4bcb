"""Opening the vault's database at its configured location, on the backend the location names."""

from __future__ import annotations

from pathlib import Path

from services.vault.store.database import Database
from services.vault.store.location import DatabaseLocation
from services.vault.store.postgres_db import (
    DEFAULT_POOL_SIZE,
    DEFAULT_STATEMENT_TIMEOUT_MS,
    PostgresDatabase,
)
from services.vault.store.sqlite_checkpoints import DEFAULT_SYNC_INTERVAL_MS
from services.vault.store.sqlite_db import SqliteDatabase


async def open_database(
    location: DatabaseLocation,
    *,
    readers: int = 3,
    pool_size: int = DEFAULT_POOL_SIZE,
    statement_timeout_ms: int = DEFAULT_STATEMENT_TIMEOUT_MS,
    audit_sync_interval_ms: int = DEFAULT_SYNC_INTERVAL_MS,
) -> Database:
    """Open and migrate the database: a SQLite file (`readers` reader connections) or a
    PostgreSQL database (a pool of up to `pool_size` connections). `audit_sync_interval_ms`
    bounds how long a SQLite audit row waits for its sync (PostgreSQL's WAL writer bounds it
    there).

    Raises:
        StartupRefused: what to fix (file permissions, an unreachable server, a newer schema).
    """
    if isinstance(location, Path):
        return await SqliteDatabase.open(
            location, readers=readers, sync_interval=audit_sync_interval_ms / 1000
        )
    return await PostgresDatabase.open(
        location, pool_size=pool_size, statement_timeout_ms=statement_timeout_ms
    )
