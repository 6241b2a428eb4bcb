"""Browser sessions (SPEC 2.5): made from a token, stored hashed, expiring, revocable.

A session secret is an opaque random string (`aic-sess-` + 32 random bytes, URL-safe) that the
gateway puts in an HttpOnly cookie; the vault keeps only its HMAC-SHA256 under the pepper, with
a label distinct from tokens'. A session inherits its token's user and scopes, never outlives
the token, and stops working when the token is revoked (revoking a token also marks its
sessions revoked, in the same transaction). Ending a session revokes the tokens minted through
it (`tokens`).
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Protocol

from services.common.errors import InvalidArgument, NotFound, Unauthenticated
from services.vault.audit import audit_failures, audit_record
from services.vault.store import AuditRecord
from services.vault.tokens import (
    AuditedTokenStore,
    Authentication,
    AuthFailure,
    Clock,
    SecretHasher,
    TokenInfo,
    check_token_id,
    touch_quietly,
)
from services.vault.validation import validate_user_id

SESSION_PREFIX = "aic-sess-"
DEFAULT_SESSION_TTL = 12 * 3600
MAX_SESSION_TTL = 30 * 86400
_SESSION_RE = re.compile(r"aic-sess-[A-Za-z0-9_-]{43}")


def new_session_secret() -> str:
    return SESSION_PREFIX + secrets.token_urlsafe(32)


def is_well_formed_session(session: str) -> bool:
    return _SESSION_RE.fullmatch(session) is not None


@dataclass(frozen=True)
class SessionInfo:
    """A session without its secret. Times are Unix seconds."""

    id: str
    user_id: str
    token_id: str
    created_at: float
    expires_at: float
    revoked_at: float | None = None


@dataclass(frozen=True)
class NewSession:
    """A created session: the only copy of its secret, and its description."""

    secret: str = field(repr=False)
    info: SessionInfo


class SessionStore(Protocol):
    """What sessions need from storage (SQLite: `services.vault.store.tokens`)."""

    async def insert_session(self, info: SessionInfo, digest: bytes, *, audit: AuditRecord) -> None:
        """Store a new session and its audit record in one transaction."""

    async def find_session(self, digest: bytes) -> tuple[SessionInfo, TokenInfo] | None:
        """The session with this digest and the token it was made from, if any."""

    async def revoke_session(
        self, user_id: str, digest: bytes, now: float, *, audit: AuditRecord
    ) -> str | None:
        """End the user's live session with this digest and revoke the tokens minted through it,
        transitively (audited in the same transaction); its id, or None when there was no live
        session to end (nothing audited)."""


class SessionService:
    """Create, revoke and authenticate sessions."""

    def __init__(
        self,
        store: SessionStore,
        tokens: AuditedTokenStore,
        hasher: SecretHasher,
        *,
        clock: Clock = time.time,
        default_ttl: int = DEFAULT_SESSION_TTL,
        max_ttl: int = MAX_SESSION_TTL,
    ) -> None:
        self._store = store
        self._tokens = tokens
        self._hasher = hasher
        self._clock = clock
        self._default_ttl = default_ttl
        self._max_ttl = max_ttl

    def __repr__(self) -> str:
        return f"SessionService(hasher={self._hasher!r}, default_ttl={self._default_ttl})"

    async def create(
        self, caller: str, user_id: str, token_id: str, *, ttl_seconds: int = 0
    ) -> NewSession:
        """Start a session from one of the user's live tokens.

        The lifetime is `ttl_seconds` (0: the default), at most `max_ttl`, and never past the
        token's expiry.

        Raises:
            InvalidArgument: a bad user id or a negative ttl.
            NotFound: (`token_not_found`) the user has no such token.
            Unauthenticated: the token is revoked or expired.
        """
        validate_user_id(user_id)
        session_id = "ses_" + secrets.token_hex(8)
        record = audit_record(caller, user_id, "sessions.create", [session_id])
        async with audit_failures(self._tokens, record):
            if ttl_seconds < 0:
                raise InvalidArgument("ttl_seconds must not be negative")
            check_token_id(token_id)
            token = await self._tokens.get_token(token_id)
            if token is None or token.user_id != user_id:
                raise NotFound("no such token", reason="token_not_found")
            now = self._clock()
            failure = token.failure_at(now)
            if failure is not None:
                raise Unauthenticated(f"the token is {failure.value}")
            expires_at = now + min(ttl_seconds or self._default_ttl, self._max_ttl)
            if token.expires_at is not None:
                expires_at = min(expires_at, token.expires_at)
            secret = new_session_secret()
            info = SessionInfo(
                id=session_id,
                user_id=user_id,
                token_id=token_id,
                created_at=now,
                expires_at=expires_at,
            )
            digest = self._hasher.session_digest(secret)
            await self._store.insert_session(info, digest, audit=record)
        return NewSession(secret=secret, info=info)

    async def revoke(self, caller: str, user_id: str, session: str) -> bool:
        """End a session (logout); ending an unknown or ended one succeeds with False."""
        validate_user_id(user_id)
        if not is_well_formed_session(session):
            return False
        digest = self._hasher.session_digest(session)
        record = audit_record(caller, user_id, "sessions.revoke")
        ended = await self._store.revoke_session(user_id, digest, self._clock(), audit=record)
        return ended is not None

    async def authenticate(self, session: str) -> Authentication:
        """Who a session belongs to, or why it is refused. Never raises for a bad session."""
        if not is_well_formed_session(session):
            return Authentication.refused(AuthFailure.MALFORMED)
        found = await self._store.find_session(self._hasher.session_digest(session))
        if found is None:
            return Authentication.refused(AuthFailure.UNKNOWN)
        info, token = found
        now = self._clock()
        failure = AuthFailure.REVOKED if info.revoked_at is not None else token.failure_at(now)
        if failure is None and now >= info.expires_at:
            failure = AuthFailure.EXPIRED
        if failure is not None:
            return Authentication(
                failure=failure, token_id=token.id, token_prefix=token.prefix, session_id=info.id
            )
        await touch_quietly(self._tokens, token, now)
        return Authentication(
            failure=None,
            user_id=info.user_id,
            token_id=token.id,
            token_prefix=token.prefix,
            scopes=token.scopes,
            expires_at=info.expires_at,
            session_id=info.id,
        )
