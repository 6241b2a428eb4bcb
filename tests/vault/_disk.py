"""What a grep of the vault's database files would find (shared by token/session tests)."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path


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
