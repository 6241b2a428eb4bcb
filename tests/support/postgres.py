"""A real PostgreSQL server for tests: one fresh database per use, dropped afterwards.

The server is `AICREDS_TEST_POSTGRES` (a libpq URL of a maintenance database on a server where
the user may create databases), by default the one this project's machines run:
`postgresql://postgres@127.0.0.1:5432/postgres`. When no server answers there, a test that
needs it is skipped with the reason, except under CI (`CI=true`), where it fails: CI never
skips the PostgreSQL tests (`.ci/run` starts the server).

    with fresh_postgres("resolve") as url:      # a PostgresUrl of an empty database
        ...
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from services.vault.store.location import PostgresUrl
from tests.support.missing import skip_or_fail

ADMIN_URL = os.environ.get("AICREDS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def run_to_end(coroutine: Any) -> Any:
    """Run a coroutine to its end on a loop of its own (the caller may be inside a loop)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


async def _admin(*statements: str) -> None:
    conn = await asyncpg.connect(ADMIN_URL, timeout=5)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@functools.cache
def unavailable_reason() -> str | None:
    """Why no PostgreSQL server is usable for tests, or None when one is."""
    try:
        run_to_end(_admin("SELECT 1"))
    except Exception as err:  # noqa: BLE001 - any failure means "not usable here"
        return f"no PostgreSQL server at {PostgresUrl(ADMIN_URL)} ({type(err).__name__}: {err})"
    return None


def require_postgres() -> None:
    """Skip the calling test when no server answers (fail under CI, which must run it)."""
    reason = unavailable_reason()
    if reason is not None:
        skip_or_fail("PostgreSQL tests", reason, "set AICREDS_TEST_POSTGRES")


def database_url(name: str) -> PostgresUrl:
    """The URL of database `name` on the test server."""
    parts = urlsplit(ADMIN_URL)
    return PostgresUrl(urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, "")))


def create_database(label: str) -> PostgresUrl:
    """A new empty database (its name starts with `aicreds_test_`); drop it with
    `drop_database`."""
    require_postgres()
    name = f"aicreds_test_{label[:20]}_{secrets.token_hex(4)}".lower()
    run_to_end(_admin(f'CREATE DATABASE "{name}"'))
    return database_url(name)


def drop_database(url: PostgresUrl) -> None:
    """Drop a database `create_database` made, closing whatever is still connected to it."""
    name = urlsplit(url.url).path.lstrip("/")
    run_to_end(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextmanager
def fresh_postgres(label: str) -> Iterator[PostgresUrl]:
    """A new empty database for the block, dropped after it."""
    url = create_database(label)
    try:
        yield url
    finally:
        drop_database(url)
