"""SQLite storage of API tokens and sessions (migration 2): HMAC digests, never secrets.

Times are stored like the rest of the database (`utc_text`: ISO 8601 UTC with microseconds,
which sorts as it compares) and handed to the domain as Unix seconds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import aiosqlite

from services.vault.sessions import SessionInfo
from services.vault.store import AuditRecord
from services.vault.store.sqlite_db import (
    SqliteDatabase,
    insert_audit,
    parse_utc_text,
    utc_text,
)
from services.vault.tokens import SessionRef, TokenInfo

# Sessions that ended this long ago are deleted when a new session is stored.
SESSION_RETENTION = 7 * 86400
_TOKEN_COLUMNS = (
    "t.id, t.user_id, t.name, t.prefix, t.scopes, t.created_at, t.last_used_at,"
    " t.expires_at, t.revoked_at, t.parent_token_id, t.parent_session_id"
)
# The tokens minted from a token (`?1`), transitively, the token itself included. A child's
# `parent_token_id` is the token that authenticated its minting, through a session or not.
_TOKEN_AND_DESCENDANTS = (
    "WITH RECURSIVE doomed(id) AS (SELECT ?1"
    " UNION SELECT c.id FROM api_tokens c JOIN doomed d ON c.parent_token_id = d.id) "
)
# The tokens minted through a session (`?1`), transitively.
_SESSION_DESCENDANTS = (
    "WITH RECURSIVE doomed(id) AS (SELECT id FROM api_tokens WHERE parent_session_id = ?1"
    " UNION SELECT c.id FROM api_tokens c JOIN doomed d ON c.parent_token_id = d.id) "
)
_REVOKE_DOOMED = (
    "UPDATE api_tokens SET revoked_at = ?2 WHERE id IN doomed AND revoked_at IS NULL",
    "UPDATE sessions SET revoked_at = ?2 WHERE token_id IN doomed AND revoked_at IS NULL",
)


def to_text(seconds: float) -> str:
    return utc_text(datetime.fromtimestamp(seconds, UTC))


def _optional_text(seconds: float | None) -> str | None:
    return None if seconds is None else to_text(seconds)


def to_seconds(text: str) -> float:
    return parse_utc_text(text).timestamp()


def _optional_seconds(text: Any) -> float | None:
    return None if text is None else to_seconds(str(text))


def _token(row: Sequence[Any]) -> TokenInfo:
    return TokenInfo(
        id=str(row[0]),
        user_id=str(row[1]),
        name=str(row[2]),
        prefix=str(row[3]),
        scopes=tuple(json.loads(str(row[4]))),
        created_at=to_seconds(str(row[5])),
        last_used_at=_optional_seconds(row[6]),
        expires_at=_optional_seconds(row[7]),
        revoked_at=_optional_seconds(row[8]),
        parent_token_id=None if row[9] is None else str(row[9]),
        parent_session_id=None if row[10] is None else str(row[10]),
    )


async def _fetch_token(conn: aiosqlite.Connection, token_id: str) -> TokenInfo | None:
    async with conn.execute(
        f"SELECT {_TOKEN_COLUMNS} FROM api_tokens t WHERE t.id = ?", (token_id,)
    ) as cursor:
        row = await cursor.fetchone()
    return _token(tuple(row)) if row is not None else None


async def _is_live(conn: aiosqlite.Connection, table: str, row_id: str) -> bool:
    """Whether the token or session `row_id` exists and is not revoked (expiry is the caller's
    check)."""
    async with conn.execute(
        f"SELECT 1 FROM {table} WHERE id = ? AND revoked_at IS NULL", (row_id,)
    ) as cursor:
        return await cursor.fetchone() is not None


class SqliteAuthStore:
    """`TokenStore`, `SessionStore` and `AuditSink` on the vault's SQLite database."""

    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    def __repr__(self) -> str:
        return f"SqliteAuthStore({self.db!r})"

    # -- tokens -------------------------------------------------------------------------------

    async def insert_token(self, info: TokenInfo, digest: bytes, *, audit: AuditRecord) -> bool:
        async with self.db.writing() as conn:
            # The parent is checked again in the transaction: a revocation that committed since
            # the caller looked must not leave a child behind.
            if info.parent_token_id is not None and not await _is_live(
                conn, "api_tokens", info.parent_token_id
            ):
                return False
            if info.parent_session_id is not None and not await _is_live(
                conn, "sessions", info.parent_session_id
            ):
                return False
            await conn.execute(
                "INSERT INTO api_tokens (id, user_id, name, prefix, digest, scopes, created_at,"
                " expires_at, parent_token_id, parent_session_id)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    info.id,
                    info.user_id,
                    info.name,
                    info.prefix,
                    digest,
                    json.dumps(list(info.scopes)),
                    to_text(info.created_at),
                    _optional_text(info.expires_at),
                    info.parent_token_id,
                    info.parent_session_id,
                ),
            )
            await insert_audit(conn, audit)
        return True

    async def list_tokens(self, user_id: str) -> list[TokenInfo]:
        rows = await self.db.fetch_all(
            f"SELECT {_TOKEN_COLUMNS} FROM api_tokens t WHERE t.user_id = ?"
            " ORDER BY t.created_at DESC, t.id DESC",
            (user_id,),
        )
        return [_token(row) for row in rows]

    async def get_token(self, token_id: str) -> TokenInfo | None:
        row = await self.db.fetch_one(
            f"SELECT {_TOKEN_COLUMNS} FROM api_tokens t WHERE t.id = ?", (token_id,)
        )
        return _token(row) if row is not None else None

    async def find_token(self, digest: bytes) -> TokenInfo | None:
        row = await self.db.fetch_one(
            f"SELECT {_TOKEN_COLUMNS} FROM api_tokens t WHERE t.digest = ?", (digest,)
        )
        return _token(row) if row is not None else None

    async def revoke_token(
        self, user_id: str, token_id: str, now: float, *, audit: AuditRecord
    ) -> TokenInfo | None:
        stamp = to_text(now)
        async with self.db.writing() as conn:
            found = await _fetch_token(conn, token_id)
            if found is None or found.user_id != user_id:
                return None
            for statement in _REVOKE_DOOMED:
                await conn.execute(_TOKEN_AND_DESCENDANTS + statement, (token_id, stamp))
            await insert_audit(conn, audit)
            return await _fetch_token(conn, token_id)

    async def touch_token(self, token_id: str, now: float, older_than: float) -> None:
        async with self.db.writing() as conn:
            await conn.execute(
                "UPDATE api_tokens SET last_used_at = ? WHERE id = ?"
                " AND (last_used_at IS NULL OR last_used_at < ?)",
                (to_text(now), token_id, to_text(older_than)),
            )

    # -- sessions -----------------------------------------------------------------------------

    async def insert_session(self, info: SessionInfo, digest: bytes, *, audit: AuditRecord) -> None:
        async with self.db.writing() as conn:
            await conn.execute(
                "DELETE FROM sessions WHERE expires_at < ?",
                (to_text(info.created_at - SESSION_RETENTION),),
            )
            await conn.execute(
                "INSERT INTO sessions (id, user_id, token_id, digest, created_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    info.id,
                    info.user_id,
                    info.token_id,
                    digest,
                    to_text(info.created_at),
                    to_text(info.expires_at),
                ),
            )
            await insert_audit(conn, audit)

    async def find_session(self, digest: bytes) -> tuple[SessionInfo, TokenInfo] | None:
        row = await self.db.fetch_one(
            "SELECT s.id, s.user_id, s.token_id, s.created_at, s.expires_at, s.revoked_at,"
            f" {_TOKEN_COLUMNS} FROM sessions s JOIN api_tokens t ON t.id = s.token_id"
            " WHERE s.digest = ?",
            (digest,),
        )
        if row is None:
            return None
        session = SessionInfo(
            id=str(row[0]),
            user_id=str(row[1]),
            token_id=str(row[2]),
            created_at=to_seconds(str(row[3])),
            expires_at=to_seconds(str(row[4])),
            revoked_at=_optional_seconds(row[5]),
        )
        return session, _token(row[6:])

    async def get_session(self, session_id: str) -> tuple[SessionRef, TokenInfo] | None:
        row = await self.db.fetch_one(
            "SELECT s.id, s.user_id, s.token_id, s.expires_at, s.revoked_at,"
            f" {_TOKEN_COLUMNS} FROM sessions s JOIN api_tokens t ON t.id = s.token_id"
            " WHERE s.id = ?",
            (session_id,),
        )
        if row is None:
            return None
        session = SessionRef(
            id=str(row[0]),
            user_id=str(row[1]),
            token_id=str(row[2]),
            expires_at=to_seconds(str(row[3])),
            revoked_at=_optional_seconds(row[4]),
        )
        return session, _token(row[5:])

    async def revoke_session(
        self, user_id: str, digest: bytes, now: float, *, audit: AuditRecord
    ) -> str | None:
        async with self.db.writing() as conn:
            async with conn.execute(
                "SELECT id FROM sessions WHERE digest = ? AND user_id = ? AND revoked_at IS NULL"
                " AND expires_at > ?",
                (digest, user_id, to_text(now)),
            ) as cursor:
                row = await cursor.fetchone()
            if row is None:
                return None
            session_id = str(row[0])
            await conn.execute(
                "UPDATE sessions SET revoked_at = ? WHERE id = ?", (to_text(now), session_id)
            )
            for statement in _REVOKE_DOOMED:
                await conn.execute(_SESSION_DESCENDANTS + statement, (session_id, to_text(now)))
            await insert_audit(conn, replace(audit, keys=(*audit.keys, session_id)))
            return session_id

    # -- audit --------------------------------------------------------------------------------

    async def append_audit(self, record: AuditRecord) -> None:
        async with self.db.writing() as conn:
            await insert_audit(conn, record)
