"""What the vault's stores need from a database, whichever backend holds it.

The store classes (`vault_tables`, `tokens`, `credential_hosts`, `rotation`, `audit_log`) are
written once against `Database` and `Transaction`, in the SQL both backends speak: `?` (or
`?N`) placeholders, `ON CONFLICT`, `RETURNING`, recursive CTEs. The few expressions that differ
come from the backend's `Dialect`. SQLite (`sqlite_db`) is the embedded default; PostgreSQL
(`postgres_db`) serves several vault replicas on one database.

Every write transaction names what it must not interleave with (`writing(lock=...)`): SQLite
runs one write at a time anyway; PostgreSQL, whose transactions run side by side, takes an
advisory lock on that name for the transaction, so that a read-modify-write of one user's rows
(a limit check, a replace-all, a revocation cascade) is never interleaved with another replica's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from services.vault.errors import StartupRefused
from services.vault.store import AuditRecord

Row = tuple[Any, ...]

_UTC_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def utc_text(moment: datetime | None = None) -> str:
    """A UTC timestamp as stored (both backends): ISO 8601 with microseconds and `Z`, which
    sorts as it compares."""
    moment = moment or datetime.now(UTC)
    # What strftime(_UTC_FORMAT) writes, at a fraction of its cost (it rewrites the format's
    # %f on every call); every audit row has one. Years below 1000 get their four digits.
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_utc_text(text: str) -> datetime:
    """The inverse of `utc_text`: an aware UTC datetime."""
    return datetime.strptime(text, _UTC_FORMAT).replace(tzinfo=UTC)


@dataclass(frozen=True)
class Dialect:
    """The SQL expressions that differ between backends, as format strings of one column."""

    name: str
    octet_length: str
    """The length in bytes of a text or blob column."""
    byte_at_1: str
    """The second byte of a blob column, as an integer."""
    byte_at_0: str
    """The first byte of a blob column, as an integer."""

    def blob_plaintext(self, column: str) -> str:
        """The plaintext bytes of a sealed blob, as `user_limits.plaintext_size` counts them:
        its length less the sealed format's overhead (30 bytes and the key id, whose length is
        the blob's second byte)."""
        return f"({self.octet_length.format(column)} - 30 - {self.byte_at_1.format(column)})"


class Transaction(Protocol):
    """One open write transaction."""

    async def execute(self, sql: str, params: Sequence[object] = ()) -> int:
        """Run one statement; the number of rows it changed."""

    async def execute_many(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        """Run one statement for each parameter row."""

    async def fetch_all(self, sql: str, params: Sequence[object] = ()) -> list[Row]: ...

    async def fetch_one(self, sql: str, params: Sequence[object] = ()) -> Row | None: ...


class Database(Protocol):
    """An open vault database."""

    dialect: Dialect

    def writing(
        self, *, lock: str | None, synced: bool = True
    ) -> AbstractAsyncContextManager[Transaction]:
        """A write transaction, committed on exit and rolled back on any error.
        `lock` names what it must not interleave with on another replica (a user id, or a
        name of a table-wide task); None when its statements need no such guard. The commit
        is synced to disk before it returns, unless `synced` is False: then it is synced
        within the bound audit rows have (`audit_batches`), for what a power loss may cost
        the last moments of (usage counts), never for credentials, keys or tokens."""

    async def fetch_all(self, sql: str, params: Sequence[object] = ()) -> list[Row]: ...

    async def fetch_one(self, sql: str, params: Sequence[object] = ()) -> Row | None: ...

    async def fetch_small(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        """A small indexed read (a few rows found by key): the backend may run it the cheapest
        way it has, even on the event loop."""

    async def append_audit(self, record: AuditRecord) -> None:
        """Append one audit row in its own transaction, committed before returning and synced
        to disk within a bounded time after (group-committed with concurrent appends; see
        `audit_batches`)."""

    async def close(self) -> None: ...


INSERT_AUDIT = "INSERT INTO audit_events (time, caller, user_id, action, keys, outcome) VALUES "
AUDIT_VALUES = "(?, ?, ?, ?, ?, ?)"


def audit_row(record: AuditRecord) -> tuple[object, ...]:
    """An audit record's column values, as stored."""
    return (
        utc_text(record.time),
        record.caller,
        record.user_id,
        record.action,
        json.dumps(list(record.keys)),
        record.outcome,
    )


async def insert_audit(tx: Transaction, record: AuditRecord) -> None:
    """Append an audit row inside the caller's transaction."""
    await tx.execute(INSERT_AUDIT + AUDIT_VALUES, audit_row(record))


def check_known_schema(applied: Sequence[int], known: Sequence[int], where: str) -> None:
    """Refuse a database whose schema a newer vault has migrated past what this one knows.

    Raises:
        StartupRefused: `applied` holds a version this vault has no migration for.
    """
    newer = sorted(set(applied) - set(known))
    if newer:
        raise StartupRefused(
            f"the {where} database has schema version {newer[-1]}, newer than this vault knows"
            f" (up to {max(known)}): run a vault release that knows it, or restore a backup"
        )
