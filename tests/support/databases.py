"""The vault's database as tests reach it on either backend (`tests.support.vault` picks it).

    db = await open_test_database(tmp_path)          # a `Database`, migrated, on the backend
    rows = raw_fetch(files.database, "SELECT ...")   # what is stored, bypassing the vault
    raw_execute(files.database, "UPDATE ...", (x,))  # tampering, as an attacker with the disk

SQL is written as for SQLite (`?` placeholders); for PostgreSQL it is translated as the store
translates its own. The raw helpers are synchronous and open a connection per call: for checks
and tampering in tests, never for load.
"""

from __future__ import annotations

import sqlite3
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg

from services.vault.store.database import Database
from services.vault.store.location import DatabaseLocation
from services.vault.store.opening import open_database
from services.vault.store.postgres_db import to_postgres
from tests.support.postgres import run_to_end
from tests.support.vault import database_for


async def open_test_database(directory: Path) -> Database:
    """The database of a vault whose state is in `directory`, opened and migrated."""
    state = directory / "vault-state"
    state.mkdir(parents=True, exist_ok=True)
    return await open_database(database_for(state))


def raw_fetch(
    location: DatabaseLocation, sql: str, params: Sequence[object] = ()
) -> list[tuple[Any, ...]]:
    """Rows of a query, read directly from the database (blobs as bytes)."""
    if isinstance(location, Path):
        conn = sqlite3.connect(location)
        try:
            return [
                tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)
                for row in conn.execute(sql, params).fetchall()
            ]
        finally:
            conn.close()

    async def fetch() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(location.url)
        try:
            return [tuple(row) for row in await conn.fetch(to_postgres(sql), *params)]
        finally:
            await conn.close()

    result: list[tuple[Any, ...]] = run_to_end(fetch())
    return result


def raw_execute(location: DatabaseLocation, sql: str, params: Sequence[object] = ()) -> int:
    """Run one statement directly on the database, committed; the rows it changed."""
    if isinstance(location, Path):
        conn = sqlite3.connect(location, isolation_level=None)
        try:
            return conn.execute(sql, params).rowcount
        finally:
            conn.close()

    async def execute() -> int:
        conn = await asyncpg.connect(location.url)
        try:
            status = await conn.execute(to_postgres(sql), *params)
        finally:
            await conn.close()
        last = status.rsplit(" ", 1)[-1]
        return int(last) if last.isdigit() else 0

    changed: int = run_to_end(execute())
    return changed


def database_text(location: DatabaseLocation) -> bytes:
    """Every byte the database keeps, for searching for a plaintext: the SQLite file and its
    WAL, or a plain `pg_dump` of the PostgreSQL database (which shows a blob as hex: search
    for `value.hex()` too; `contains_plaintext` does both)."""
    if isinstance(location, Path):
        return b"".join(p.read_bytes() for p in (location, Path(f"{location}-wal")) if p.exists())
    return subprocess.run(
        ["pg_dump", "--no-owner", "--dbname", location.url],
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout


def contains_plaintext(location: DatabaseLocation, value: bytes) -> bool:
    """Whether `value` is anywhere in the stored database, as bytes or as a dump's hex."""
    stored = database_text(location)
    return value in stored or value.hex().encode() in stored
