"""Storage of API tokens and sessions (migration 2): HMAC digests, never secrets.

Times are stored like the rest of the database (`utc_text`: ISO 8601 UTC with microseconds,
which sorts as it compares) and handed to the domain as Unix seconds.

Every token and session row carries a seal (migration 6, `services.vault.row_seals`) over its
id, digest, user, scopes, expiry, revocation and parents, in their stored form. Every read
checks it: a row that fails is reported as an integrity error and treated as absent (so
`authenticate` answers as for an unknown token), and every write that changes a sealed field
(insert, revoke) writes a fresh seal in the same statement. A row that fails its check is never
re-sealed: revoking it sets `revoked_at` and leaves it refused.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from services.vault.row_seals import SESSION_ROW, TOKEN_ROW, RowSealer
from services.vault.sessions import SessionInfo
from services.vault.store import AuditRecord
from services.vault.store.database import (
    Database,
    Transaction,
    insert_audit,
    parse_utc_text,
    utc_text,
)
from services.vault.tokens import SessionRef, TokenInfo

# What re-sealing token and session rows (key rotation, migration 6) keeps apart from itself.
RESEAL_LOCK = "vault:reseal-rows"
# Sessions that ended this long ago are deleted when a new session is stored.
SESSION_RETENTION = 7 * 86400
TOKEN_COLUMNS = (
    "t.id, t.user_id, t.name, t.prefix, t.scopes, t.created_at, t.last_used_at,"
    " t.expires_at, t.revoked_at, t.parent_token_id, t.parent_session_id,"
    " t.digest, t.seal_kek, t.seal"
)
SESSION_COLUMNS = (
    "s.id, s.user_id, s.token_id, s.created_at, s.expires_at, s.revoked_at,"
    " s.digest, s.seal_kek, s.seal"
)
# The tokens minted from a token (`?1`), transitively, the token itself included. A child's
# `parent_token_id` is the token that authenticated its minting, through a session or not.
_TOKEN_AND_DESCENDANTS = (
    "WITH RECURSIVE doomed(id) AS (SELECT id FROM api_tokens WHERE id = ?1"
    " UNION SELECT c.id FROM api_tokens c JOIN doomed d ON c.parent_token_id = d.id) "
)
# The tokens minted through a session (`?1`), transitively.
_SESSION_DESCENDANTS = (
    "WITH RECURSIVE doomed(id) AS (SELECT id FROM api_tokens WHERE parent_session_id = ?1"
    " UNION SELECT c.id FROM api_tokens c JOIN doomed d ON c.parent_token_id = d.id) "
)
_DOOMED_TOKENS = (
    f"SELECT {TOKEN_COLUMNS} FROM api_tokens t"
    " WHERE t.id IN (SELECT id FROM doomed) AND t.revoked_at IS NULL"
)
_DOOMED_SESSIONS = (
    f"SELECT {SESSION_COLUMNS} FROM sessions s"
    " WHERE s.token_id IN (SELECT id FROM doomed) AND s.revoked_at IS NULL"
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


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def token_seal_fields(
    token_id: str,
    digest: bytes,
    user_id: str,
    scopes: str,
    expires_at: str | None,
    revoked_at: str | None,
    parent_token_id: str | None,
    parent_session_id: str | None,
) -> tuple[str | None, ...]:
    """A token row's sealed fields, in their stored form."""
    return (
        token_id,
        digest.hex(),
        user_id,
        scopes,
        expires_at,
        revoked_at,
        parent_token_id,
        parent_session_id,
    )


def token_row_fields(row: Sequence[Any], revoked_at: Any = ...) -> tuple[str | None, ...]:
    """The sealed fields of a row read with `TOKEN_COLUMNS` (`revoked_at`: as it will be)."""
    return token_seal_fields(
        str(row[0]),
        bytes(row[11]),
        str(row[1]),
        str(row[4]),
        _text(row[7]),
        _text(row[8] if revoked_at is ... else revoked_at),
        _text(row[9]),
        _text(row[10]),
    )


def session_seal_fields(
    session_id: str,
    digest: bytes,
    user_id: str,
    token_id: str,
    expires_at: str,
    revoked_at: str | None,
) -> tuple[str | None, ...]:
    """A session row's sealed fields, in their stored form."""
    return (session_id, digest.hex(), user_id, token_id, expires_at, revoked_at)


def session_row_fields(row: Sequence[Any], revoked_at: Any = ...) -> tuple[str | None, ...]:
    """The sealed fields of a row read with `SESSION_COLUMNS`."""
    return session_seal_fields(
        str(row[0]),
        bytes(row[6]),
        str(row[1]),
        str(row[2]),
        str(row[4]),
        _text(row[5] if revoked_at is ... else revoked_at),
    )


def _session(row: Sequence[Any]) -> SessionInfo:
    return SessionInfo(
        id=str(row[0]),
        user_id=str(row[1]),
        token_id=str(row[2]),
        created_at=to_seconds(str(row[3])),
        expires_at=to_seconds(str(row[4])),
        revoked_at=_optional_seconds(row[5]),
    )


async def _is_live(conn: Transaction, table: str, row_id: str) -> bool:
    """Whether the token or session `row_id` exists and is not revoked (expiry is the caller's
    check)."""
    found = await conn.fetch_one(
        f"SELECT 1 FROM {table} WHERE id = ? AND revoked_at IS NULL", (row_id,)
    )
    return found is not None


class SqlAuthStore:
    """`TokenStore`, `SessionStore` and `AuditSink` on the vault's database."""

    def __init__(self, db: Database, sealer: RowSealer) -> None:
        self.db = db
        self._sealer = sealer

    def __repr__(self) -> str:
        return f"SqlAuthStore({self.db!r})"

    def _checked_token(self, row: Sequence[Any]) -> TokenInfo | None:
        """The token of a row read with `TOKEN_COLUMNS`, or None if it fails its seal."""
        if not self._sealer.verify(
            TOKEN_ROW,
            str(row[0]),
            token_row_fields(row),
            _text(row[12]),
            None if row[13] is None else bytes(row[13]),
            user_id=str(row[1]),
        ):
            return None
        return _token(row)

    def _checked_session(self, row: Sequence[Any]) -> SessionInfo | None:
        """The session of a row read with `SESSION_COLUMNS`, or None if it fails its seal."""
        if not self._sealer.verify(
            SESSION_ROW,
            str(row[0]),
            session_row_fields(row),
            _text(row[7]),
            None if row[8] is None else bytes(row[8]),
            user_id=str(row[1]),
        ):
            return None
        return _session(row)

    async def _fetch_token(self, conn: Transaction, token_id: str) -> TokenInfo | None:
        row = await conn.fetch_one(
            f"SELECT {TOKEN_COLUMNS} FROM api_tokens t WHERE t.id = ?", (token_id,)
        )
        return self._checked_token(row) if row is not None else None

    async def _revoke_rows(
        self, conn: Transaction, root: str, descendants: str, stamp: str
    ) -> None:
        """Revoke the live tokens `descendants` names (from `root`) and their live sessions,
        re-sealing each row that passes its check (one that fails stays refused)."""
        tokens = await conn.fetch_all(descendants + _DOOMED_TOKENS, (root,))
        sessions = await conn.fetch_all(descendants + _DOOMED_SESSIONS, (root,))
        for row in tokens:
            kek_id, seal = None, None
            if self._checked_token(row) is not None:
                kek_id, seal = self._sealer.seal(TOKEN_ROW, token_row_fields(row, stamp))
            await conn.execute(
                "UPDATE api_tokens SET revoked_at = ?, seal_kek = ?, seal = ? WHERE id = ?",
                (stamp, kek_id, seal, row[0]),
            )
        for row in sessions:
            await self._revoke_session_row(conn, row, stamp)

    async def _revoke_session_row(self, conn: Transaction, row: Sequence[Any], stamp: str) -> None:
        kek_id, seal = None, None
        if self._checked_session(row) is not None:
            kek_id, seal = self._sealer.seal(SESSION_ROW, session_row_fields(row, stamp))
        await conn.execute(
            "UPDATE sessions SET revoked_at = ?, seal_kek = ?, seal = ? WHERE id = ?",
            (stamp, kek_id, seal, row[0]),
        )

    # -- tokens -------------------------------------------------------------------------------

    async def insert_token(self, info: TokenInfo, digest: bytes, *, audit: AuditRecord) -> bool:
        scopes = json.dumps(list(info.scopes))
        expires_at = _optional_text(info.expires_at)
        kek_id, seal = self._sealer.seal(
            TOKEN_ROW,
            token_seal_fields(
                info.id,
                digest,
                info.user_id,
                scopes,
                expires_at,
                None,
                info.parent_token_id,
                info.parent_session_id,
            ),
        )
        async with self.db.writing(lock=info.user_id) as conn:
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
                " expires_at, parent_token_id, parent_session_id, seal_kek, seal)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    info.id,
                    info.user_id,
                    info.name,
                    info.prefix,
                    digest,
                    scopes,
                    to_text(info.created_at),
                    expires_at,
                    info.parent_token_id,
                    info.parent_session_id,
                    kek_id,
                    seal,
                ),
            )
            await insert_audit(conn, audit)
        return True

    async def list_tokens(self, user_id: str) -> list[TokenInfo]:
        rows = await self.db.fetch_all(
            f"SELECT {TOKEN_COLUMNS} FROM api_tokens t WHERE t.user_id = ?"
            " ORDER BY t.created_at DESC, t.id DESC",
            (user_id,),
        )
        checked = (self._checked_token(row) for row in rows)
        return [info for info in checked if info is not None]

    async def get_token(self, token_id: str) -> TokenInfo | None:
        row = await self.db.fetch_one(
            f"SELECT {TOKEN_COLUMNS} FROM api_tokens t WHERE t.id = ?", (token_id,)
        )
        return self._checked_token(row) if row is not None else None

    async def find_token(self, digest: bytes) -> TokenInfo | None:
        row = await self.db.fetch_one(
            f"SELECT {TOKEN_COLUMNS} FROM api_tokens t WHERE t.digest = ?", (digest,)
        )
        return self._checked_token(row) if row is not None else None

    async def revoke_token(
        self, user_id: str, token_id: str, now: float, *, audit: AuditRecord
    ) -> TokenInfo | None:
        stamp = to_text(now)
        async with self.db.writing(lock=user_id) as conn:
            found = await self._fetch_token(conn, token_id)
            if found is None or found.user_id != user_id:
                return None
            await self._revoke_rows(conn, token_id, _TOKEN_AND_DESCENDANTS, stamp)
            await insert_audit(conn, audit)
            return await self._fetch_token(conn, token_id)

    async def touch_token(self, token_id: str, now: float, older_than: float) -> None:
        # One idempotent statement: no other write need be kept apart from it.
        async with self.db.writing(lock=None) as conn:
            await conn.execute(
                "UPDATE api_tokens SET last_used_at = ? WHERE id = ?"
                " AND (last_used_at IS NULL OR last_used_at < ?)",
                (to_text(now), token_id, to_text(older_than)),
            )

    # -- sessions -----------------------------------------------------------------------------

    async def insert_session(self, info: SessionInfo, digest: bytes, *, audit: AuditRecord) -> None:
        expires_at = to_text(info.expires_at)
        kek_id, seal = self._sealer.seal(
            SESSION_ROW,
            session_seal_fields(info.id, digest, info.user_id, info.token_id, expires_at, None),
        )
        async with self.db.writing(lock=info.user_id) as conn:
            await conn.execute(
                "DELETE FROM sessions WHERE expires_at < ?",
                (to_text(info.created_at - SESSION_RETENTION),),
            )
            await conn.execute(
                "INSERT INTO sessions (id, user_id, token_id, digest, created_at, expires_at,"
                " seal_kek, seal) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    info.id,
                    info.user_id,
                    info.token_id,
                    digest,
                    to_text(info.created_at),
                    expires_at,
                    kek_id,
                    seal,
                ),
            )
            await insert_audit(conn, audit)

    async def _session_and_token(
        self, where: str, param: object
    ) -> tuple[SessionInfo, TokenInfo] | None:
        row = await self.db.fetch_one(
            f"SELECT {SESSION_COLUMNS}, {TOKEN_COLUMNS}"
            f" FROM sessions s JOIN api_tokens t ON t.id = s.token_id WHERE {where}",
            (param,),
        )
        if row is None:
            return None
        session = self._checked_session(row[:9])
        token = self._checked_token(row[9:])
        if session is None or token is None or session.user_id != token.user_id:
            return None
        return session, token

    async def find_session(self, digest: bytes) -> tuple[SessionInfo, TokenInfo] | None:
        return await self._session_and_token("s.digest = ?", digest)

    async def get_session(self, session_id: str) -> tuple[SessionRef, TokenInfo] | None:
        found = await self._session_and_token("s.id = ?", session_id)
        if found is None:
            return None
        session, token = found
        ref = SessionRef(
            id=session.id,
            user_id=session.user_id,
            token_id=session.token_id,
            expires_at=session.expires_at,
            revoked_at=session.revoked_at,
        )
        return ref, token

    async def revoke_session(
        self, user_id: str, digest: bytes, now: float, *, audit: AuditRecord
    ) -> str | None:
        stamp = to_text(now)
        async with self.db.writing(lock=user_id) as conn:
            row = await conn.fetch_one(
                f"SELECT {SESSION_COLUMNS} FROM sessions s WHERE s.digest = ? AND s.user_id = ?"
                " AND s.revoked_at IS NULL AND s.expires_at > ?",
                (digest, user_id, stamp),
            )
            if row is None or self._checked_session(row) is None:
                return None
            session_id = str(row[0])
            await self._revoke_session_row(conn, row, stamp)
            await self._revoke_rows(conn, session_id, _SESSION_DESCENDANTS, stamp)
            await insert_audit(conn, replace(audit, keys=(*audit.keys, session_id)))
            return session_id

    # -- audit --------------------------------------------------------------------------------

    async def append_audit(self, record: AuditRecord) -> None:
        async with self.db.writing(lock=None) as conn:
            await insert_audit(conn, record)

    # -- sealing in place (migration 6) and re-sealing (key rotation) ---------------------------

    async def seal_unsealed_rows(self, conn: Transaction) -> tuple[int, int]:
        """Seal every token and session row that has no seal, inside the caller's transaction
        (only while migration 6 is pending: see `services.vault.resealing`); how many of each."""
        tokens = await conn.fetch_all(
            f"SELECT {TOKEN_COLUMNS} FROM api_tokens t WHERE t.seal IS NULL"
        )
        sessions = await conn.fetch_all(
            f"SELECT {SESSION_COLUMNS} FROM sessions s WHERE s.seal IS NULL"
        )
        for row in tokens:
            kek_id, seal = self._sealer.seal(TOKEN_ROW, token_row_fields(row))
            await conn.execute(
                "UPDATE api_tokens SET seal_kek = ?, seal = ? WHERE id = ?", (kek_id, seal, row[0])
            )
        for row in sessions:
            kek_id, seal = self._sealer.seal(SESSION_ROW, session_row_fields(row))
            await conn.execute(
                "UPDATE sessions SET seal_kek = ?, seal = ? WHERE id = ?", (kek_id, seal, row[0])
            )
        return len(tokens), len(sessions)

    async def reseal_rows_not_under(self, kek_id: str, limit: int) -> int:
        """Re-seal up to `limit` token and session rows sealed under another master key than
        `kek_id` (the primary), in one transaction; how many rows were handled. A row that fails
        its check loses its seal instead (it stays refused, and no longer needs the old key)."""
        handled = 0
        async with self.db.writing(lock=RESEAL_LOCK) as conn:
            for table, columns, kind in (
                ("api_tokens t", TOKEN_COLUMNS, TOKEN_ROW),
                ("sessions s", SESSION_COLUMNS, SESSION_ROW),
            ):
                alias = table[-1]
                rows = await conn.fetch_all(
                    f"SELECT {columns} FROM {table} WHERE {alias}.seal_kek IS NOT NULL"
                    f" AND {alias}.seal_kek != ? LIMIT ?",
                    (kek_id, limit - handled),
                )
                for row in rows:
                    if kind == TOKEN_ROW:
                        intact = self._checked_token(row) is not None
                        fields = token_row_fields(row)
                    else:
                        intact = self._checked_session(row) is not None
                        fields = session_row_fields(row)
                    new_kek, seal = self._sealer.seal(kind, fields) if intact else (None, None)
                    # Compare and swap on the seal read: a revocation that committed since (on
                    # another replica, under its user's lock, not this one) wrote a seal of its
                    # own over the revoked row, which a seal computed before it must not undo.
                    await conn.execute(
                        f"UPDATE {table.split()[0]} SET seal_kek = ?, seal = ?"
                        " WHERE id = ? AND seal_kek = ? AND seal = ?",
                        (new_kek, seal, row[0], row[-2], row[-1]),
                    )
                handled += len(rows)
                if handled >= limit:
                    break
        return handled
