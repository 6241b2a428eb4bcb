"""The vault's database files as tests inspect them: what a grep would find, and time travel."""

from __future__ import annotations

import base64
import hashlib
import sqlite3
from datetime import timedelta
from pathlib import Path

from services.vault.keyring import Keyring, KeyringSource
from services.vault.row_seals import SESSION_ROW, TOKEN_ROW, RowSealer
from services.vault.store.database import parse_utc_text, utc_text
from services.vault.store.tokens import (
    SESSION_COLUMNS,
    TOKEN_COLUMNS,
    session_row_fields,
    token_row_fields,
)


def database_bytes(database: Path) -> bytes:
    """The database file, its WAL and shared-memory file, concatenated."""
    parts = [database, Path(f"{database}-wal"), Path(f"{database}-shm")]
    return b"".join(p.read_bytes() for p in parts if p.exists())


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


def age(
    database: Path,
    table: str,
    row_id: str,
    seconds: float,
    keyring_file: Path | None = None,
) -> None:
    """Move every time of one `api_tokens` or `sessions` row `seconds` into the past, as if
    that much time had gone by for it (cheaper than sleeping through a lifetime), and seal the
    row again as the vault would, with the keyring (default: `master-keys.json` beside the
    database), since a row changed without the keyring is refused."""
    assert table in ("api_tokens", "sessions")
    columns = (
        ("created_at", "expires_at", "last_used_at")
        if table == "api_tokens"
        else (
            "created_at",
            "expires_at",
        )
    )
    with sqlite3.connect(database) as conn:
        row = conn.execute(
            f"SELECT {', '.join(columns)} FROM {table} WHERE id = ?", (row_id,)
        ).fetchone()
        assert row is not None, row_id
        moved = [
            None if t is None else utc_text(parse_utc_text(t) - timedelta(seconds=seconds))
            for t in row
        ]
        conn.execute(
            f"UPDATE {table} SET {', '.join(c + ' = ?' for c in columns)} WHERE id = ?",
            (*moved, row_id),
        )
        reseal(conn, table, row_id, keyring_file or database.with_name("master-keys.json"))


def reseal(conn: sqlite3.Connection, table: str, row_id: str, keyring_file: Path) -> None:
    """Seal one token or session row as it now is, with the keys in `keyring_file`."""
    sealer = RowSealer(KeyringSource(keyring_file, Keyring.load(keyring_file)))
    if table == "api_tokens":
        row = conn.execute(
            f"SELECT {TOKEN_COLUMNS} FROM api_tokens t WHERE t.id = ?", (row_id,)
        ).fetchone()
        kek_id, seal = sealer.seal(TOKEN_ROW, token_row_fields(row))
    else:
        row = conn.execute(
            f"SELECT {SESSION_COLUMNS} FROM sessions s WHERE s.id = ?", (row_id,)
        ).fetchone()
        kek_id, seal = sealer.seal(SESSION_ROW, session_row_fields(row))
    conn.execute(f"UPDATE {table} SET seal_kek = ?, seal = ? WHERE id = ?", (kek_id, seal, row_id))
