"""The vault's database as tests inspect it on either backend: what a grep would find, and
time travel."""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import timedelta
from pathlib import Path

from services.vault.keyring import Keyring, KeyringSource
from services.vault.row_seals import SESSION_ROW, TOKEN_ROW, RowSealer
from services.vault.store.database import parse_utc_text, utc_text
from services.vault.store.location import DatabaseLocation
from services.vault.store.tokens import (
    SESSION_COLUMNS,
    TOKEN_COLUMNS,
    session_row_fields,
    token_row_fields,
)
from tests.support import vault as support_vault
from tests.support.databases import database_text, raw_execute, raw_fetch

# A bytea value in a plain pg_dump (COPY text format, its backslash doubled): `\\x0a1b...`.
_DUMPED_BYTEA = re.compile(rb"\\\\x((?:[0-9a-f]{2})+)")


def database_bytes(database: DatabaseLocation) -> bytes:
    """Everything the database holds, for a grep: on SQLite the database file, its WAL and
    shared-memory file, concatenated; on PostgreSQL a plain dump followed by every blob in it
    decoded from the dump's hex, so that a form hidden inside a blob is found as raw bytes."""
    if isinstance(database, Path):
        parts = [database, Path(f"{database}-wal"), Path(f"{database}-shm")]
        return b"".join(p.read_bytes() for p in parts if p.exists())
    dump = database_text(database)
    blobs = [bytes.fromhex(m.decode()) for m in _DUMPED_BYTEA.findall(dump)]
    return b"\n".join([dump, *blobs])


def forms_of(secret: str, prefix: str) -> list[bytes]:
    """Every form of a secret a grep could find: whole, without its fixed prefix, the random
    bytes it encodes (raw, hex), in UTF-16, and its unkeyed SHA-256 (raw, hex)."""
    body = secret.removeprefix(prefix)
    raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    digest = hashlib.sha256(secret.encode()).digest()
    return [
        secret.encode(),
        body.encode(),
        body[:16].encode(),
        body[-16:].encode(),
        raw,
        raw.hex().encode(),
        secret.encode("utf-16-le"),
        digest,
        digest.hex().encode(),
    ]


def _keyring_file_of(database: DatabaseLocation) -> Path:
    """`master-keys.json` in the state directory of the test vault whose database this is."""
    if isinstance(database, Path):
        return database.with_name("master-keys.json")
    for state, url in support_vault._databases.items():
        if url == database:
            return state / "master-keys.json"
    raise ValueError(f"no test vault state has the database {database}: pass keyring_file")


def age(
    database: DatabaseLocation,
    table: str,
    row_id: str,
    seconds: float,
    keyring_file: Path | None = None,
) -> None:
    """Move every time of one `api_tokens` or `sessions` row `seconds` into the past, as if
    that much time had gone by for it (cheaper than sleeping through a lifetime), and seal the
    row again as the vault would, with the keyring (default: `master-keys.json` of the test
    vault's state directory), since a row changed without the keyring is refused. One UPDATE:
    the vault never reads the row moved but not yet sealed again."""
    assert table in ("api_tokens", "sessions")
    times: tuple[str, ...]
    if table == "api_tokens":
        columns, times = TOKEN_COLUMNS, ("created_at", "expires_at", "last_used_at")
        alias, fields, kind = "t", token_row_fields, TOKEN_ROW
    else:
        columns, times = SESSION_COLUMNS, ("created_at", "expires_at")
        alias, fields, kind = "s", session_row_fields, SESSION_ROW
    names = [c.strip().removeprefix(f"{alias}.") for c in columns.split(",")]
    rows = raw_fetch(
        database, f"SELECT {columns} FROM {table} {alias} WHERE {alias}.id = ?", (row_id,)
    )
    assert len(rows) == 1, row_id
    row = list(rows[0])
    for name in times:
        at = names.index(name)
        if row[at] is not None:
            row[at] = utc_text(parse_utc_text(row[at]) - timedelta(seconds=seconds))
    keys = keyring_file or _keyring_file_of(database)
    kek_id, seal = RowSealer(KeyringSource(keys, Keyring.load(keys))).seal(kind, fields(row))
    changed = raw_execute(
        database,
        f"UPDATE {table} SET {', '.join(c + ' = ?' for c in times)}, seal_kek = ?, seal = ?"
        " WHERE id = ?",
        (*(row[names.index(c)] for c in times), kek_id, seal, row_id),
    )
    assert changed == 1, row_id
