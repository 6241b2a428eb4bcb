"""API tokens (SPEC 2.1, 2.4): their format, scopes, keyed hashing and lifecycle.

A token is `sk-aic-` followed by 32 random bytes in URL-safe base64 (43 characters). The vault
keeps only HMAC-SHA256 of it under the keyring's pepper, so the plaintext exists once, in the
reply to `create`. `authenticate` answers who a token belongs to or the precise reason it is
refused (malformed, unknown, revoked, expired); it never raises for a bad token.

A token minted by an authenticated principal records its parent: the token that authenticated
the request (`parent_token_id`) and, when it was a browser session, that session
(`parent_session_id`). A child never outlives its parent (its expiry is capped by the parent
token's, or the session's) and is revoked with it: revoking a token revokes every token minted
from it, transitively, and their sessions; ending a session revokes the tokens minted through
it. The cascade is written at revoke time, so `authenticate` stays one indexed read. Nor does a
child hold more than its parent: its scopes are a subset of the parent token's (for a session,
of the session's token's), all of them when none are asked for (`services.common.scopes`).

Names and lifetimes follow `services.common.token_rules`, the rule the gateway checks too.

`last_used_at` is written at most once a minute per token (`LAST_USED_RESOLUTION`): the
conditional update is skipped when the stored time is recent, so authenticating a busy token
costs one indexed read, not a write per request.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from services.common.errors import InvalidArgument, NotFound, Unauthenticated
from services.common.scopes import canonical_scopes, child_scopes, granted_scopes
from services.common.token_rules import validate_lifetime, validate_name
from services.vault.audit import audit_failures, audit_record
from services.vault.store import AuditRecord, AuditSink
from services.vault.validation import validate_user_id

TOKEN_PREFIX = "sk-aic-"
TOKEN_RANDOM_BYTES = 32
DISPLAY_PREFIX_LENGTH = 8
LAST_USED_RESOLUTION = 60.0
# 32 random bytes are 43 URL-safe characters; accept longer tokens (more entropy) up to a bound.
_TOKEN_RE = re.compile(r"sk-aic-[A-Za-z0-9_-]{43,256}")
_TOKEN_ID_RE = re.compile(r"tok_[A-Za-z0-9_-]{1,64}")

Clock = Callable[[], float]
_log = logging.getLogger("aicreds.vault.tokens")


def new_token() -> str:
    """A fresh API token: `sk-aic-` + 32 random bytes, URL-safe base64."""
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_RANDOM_BYTES)


def new_token_id() -> str:
    """A fresh, non-secret token identifier."""
    return "tok_" + secrets.token_hex(8)


def is_well_formed_token(token: str) -> bool:
    """Whether a string is shaped like an API token (says nothing about it being valid)."""
    return _TOKEN_RE.fullmatch(token) is not None


def display_prefix(token: str) -> str:
    """The first 8 characters, shown to recognise a token (`sk-aic-x`)."""
    return token[:DISPLAY_PREFIX_LENGTH]


def check_token_id(token_id: str) -> str:
    if _TOKEN_ID_RE.fullmatch(token_id) is None:
        raise NotFound("no such token", reason="token_not_found")
    return token_id


def parse_lifetime(text: str) -> int:
    """A lifetime like `30d`, `12h`, `45m`, `90s`, `2w` or plain seconds, in seconds.

    `0`, `never` and `none` mean no expiry (0).

    Raises:
        ValueError: the text is not such a lifetime.
    """
    value = text.strip().lower()
    if value in ("never", "none", "0"):
        return 0
    match = re.fullmatch(r"(\d{1,9})\s*([smhdw]?)", value)
    if match is None:
        raise ValueError(f"invalid lifetime {text!r}: use e.g. 90s, 45m, 12h, 30d, 2w or never")
    units = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    seconds = int(match.group(1)) * units[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"invalid lifetime {text!r}: must be positive")
    return seconds


class SecretHasher:
    """HMAC-SHA256 under the server pepper; one label per kind of secret (domain separation)."""

    def __init__(self, pepper: bytes) -> None:
        if len(pepper) < 32:
            raise ValueError("the token pepper must be at least 32 bytes")
        self._pepper = pepper

    def __repr__(self) -> str:
        return "SecretHasher(pepper=<hidden>)"

    def digest(self, label: str, secret: str) -> bytes:
        message = label.encode("ascii") + b"\x00" + secret.encode("utf-8")
        return hmac.new(self._pepper, message, hashlib.sha256).digest()

    def token_digest(self, token: str) -> bytes:
        return self.digest("aicreds.token.v1", token)

    def session_digest(self, session: str) -> bytes:
        return self.digest("aicreds.session.v1", session)


class AuthFailure(StrEnum):
    """Why a token or session was refused."""

    MALFORMED = "malformed"
    UNKNOWN = "unknown"
    REVOKED = "revoked"
    EXPIRED = "expired"


@dataclass(frozen=True)
class TokenInfo:
    """A token without its secret. Times are Unix seconds; None when unset."""

    id: str
    user_id: str
    name: str
    prefix: str
    scopes: tuple[str, ...]
    created_at: float
    last_used_at: float | None = None
    expires_at: float | None = None
    revoked_at: float | None = None
    parent_token_id: str | None = None
    parent_session_id: str | None = None

    def failure_at(self, now: float) -> AuthFailure | None:
        if self.revoked_at is not None:
            return AuthFailure.REVOKED
        if self.expires_at is not None and now >= self.expires_at:
            return AuthFailure.EXPIRED
        return None


@dataclass(frozen=True)
class Authentication:
    """The answer to `authenticate`: who, or why not."""

    failure: AuthFailure | None
    user_id: str = ""
    token_id: str = ""
    token_prefix: str = ""
    scopes: tuple[str, ...] = ()
    expires_at: float | None = None
    session_id: str = ""

    @property
    def authenticated(self) -> bool:
        return self.failure is None

    @classmethod
    def refused(cls, failure: AuthFailure) -> Authentication:
        return cls(failure=failure)


@dataclass(frozen=True)
class NewToken:
    """A created token: the only copy of the plaintext, and its description."""

    token: str = field(repr=False)
    info: TokenInfo


class TokenStore(Protocol):
    """What tokens need from storage (SQLite: `services.vault.store.tokens`)."""

    async def insert_token(self, info: TokenInfo, digest: bytes, *, audit: AuditRecord) -> bool:
        """Store a new token and its audit record in one transaction; False (nothing stored)
        when its parent token or session (if any) has been revoked meanwhile."""

    async def list_tokens(self, user_id: str) -> list[TokenInfo]:
        """A user's tokens, newest first, revoked included."""

    async def get_token(self, token_id: str) -> TokenInfo | None:
        """A token by id, whoever owns it."""

    async def find_token(self, digest: bytes) -> TokenInfo | None:
        """The token with this digest, if any."""

    async def get_session(self, session_id: str) -> tuple[SessionRef, TokenInfo] | None:
        """A session by id and the token it was made from, if any."""

    async def revoke_token(
        self, user_id: str, token_id: str, now: float, *, audit: AuditRecord
    ) -> TokenInfo | None:
        """Revoke the user's token, every token minted from it (transitively) and the live
        sessions of all of them, with the audit record, in one transaction; an already revoked
        token keeps its time. None if the user has no such token."""

    async def touch_token(self, token_id: str, now: float, older_than: float) -> None:
        """Set last_used_at = now where it is unset or before `older_than`."""


@dataclass(frozen=True)
class SessionRef:
    """What minting a token through a session needs to know of the session."""

    id: str
    user_id: str
    token_id: str
    expires_at: float
    revoked_at: float | None = None


@dataclass(frozen=True)
class Parent:
    """Who mints a token: the id of the token that authenticated the request and, for a browser
    session, the session's id. Empty: nobody (the operator command, an internal caller)."""

    token_id: str = ""
    session_id: str = ""


class AuditedTokenStore(TokenStore, AuditSink, Protocol):
    pass


@dataclass(frozen=True)
class _Lineage:
    """A live parent, as a child sees it: ids to record, the expiry it may not pass (None:
    never expires) and the scopes it may not exceed."""

    token_id: str
    session_id: str | None
    ceiling: float | None
    scopes: tuple[str, ...]


class TokenService:
    """Create, list, revoke and authenticate API tokens; changes are audited (ids, never
    secrets)."""

    def __init__(
        self, store: AuditedTokenStore, hasher: SecretHasher, clock: Clock = time.time
    ) -> None:
        self._store = store
        self._hasher = hasher
        self._clock = clock

    def __repr__(self) -> str:
        return f"TokenService(hasher={self._hasher!r})"

    async def create(
        self,
        caller: str,
        user_id: str,
        *,
        name: str,
        scopes: Iterable[str] = (),
        expires_in_seconds: int = 0,
        parent: Parent = Parent(),
    ) -> NewToken:
        """Issue a token.

        With a `parent`, the token expires no later than the parent token (or session): a
        longer lifetime is capped to it, none means the parent's expiry. The cap is visible in
        the answer's `expires_at`, as for sessions. Its scopes must be among the parent token's;
        none requested means all of the parent's. Without a parent (the operator command), none
        requested means every scope.

        Raises:
            InvalidArgument: a bad user id, name, scope or lifetime (`token_rules`), or a
                parent session that was not made from the parent token.
            NotFound: (`token_not_found`, `session_not_found`) the user has no such parent.
            Unauthenticated: the parent is revoked or expired.
            PermissionDenied: (`forbidden`) a requested scope the parent lacks (named).
        """
        validate_user_id(user_id)
        token_id = new_token_id()
        record = audit_record(caller, user_id, "tokens.create", [token_id])
        async with audit_failures(self._store, record):
            validate_name(name)
            validate_lifetime(expires_in_seconds)
            requested = canonical_scopes(scopes)
            now = self._clock()
            lineage = await self._parent(user_id, parent, now)
            expires_at = now + expires_in_seconds if expires_in_seconds else None
            if lineage is None:
                granted = granted_scopes(requested)
            else:
                granted = child_scopes(requested, lineage.scopes)
                if lineage.ceiling is not None:
                    ceiling = lineage.ceiling
                    expires_at = ceiling if expires_at is None else min(expires_at, ceiling)
            token = new_token()
            info = TokenInfo(
                id=token_id,
                user_id=user_id,
                name=name,
                prefix=display_prefix(token),
                scopes=granted,
                created_at=now,
                expires_at=expires_at,
                parent_token_id=None if lineage is None else lineage.token_id,
                parent_session_id=None if lineage is None else lineage.session_id,
            )
            digest = self._hasher.token_digest(token)
            if not await self._store.insert_token(info, digest, audit=record):
                raise Unauthenticated("the parent token or session was revoked")
        return NewToken(token=token, info=info)

    async def _parent(self, user_id: str, parent: Parent, now: float) -> _Lineage | None:
        """The live parent named by `parent`; None when it names none."""
        if parent.session_id:
            found = await self._store.get_session(parent.session_id)
            if found is None or found[0].user_id != user_id:
                raise NotFound("no such session", reason="session_not_found")
            session, token = found
            if parent.token_id and parent.token_id != session.token_id:
                raise InvalidArgument("the parent session was not made from the parent token")
            failure = token.failure_at(now)
            if failure is None and session.revoked_at is not None:
                failure = AuthFailure.REVOKED
            if failure is None and now >= session.expires_at:
                failure = AuthFailure.EXPIRED
            if failure is not None:
                raise Unauthenticated(f"the parent session is {failure.value}")
            return _Lineage(token.id, session.id, session.expires_at, token.scopes)
        if parent.token_id:
            check_token_id(parent.token_id)
            info = await self._store.get_token(parent.token_id)
            if info is None or info.user_id != user_id:
                raise NotFound("no such token", reason="token_not_found")
            failure = info.failure_at(now)
            if failure is not None:
                raise Unauthenticated(f"the parent token is {failure.value}")
            return _Lineage(info.id, None, info.expires_at, info.scopes)
        return None

    async def list(self, user_id: str) -> list[TokenInfo]:
        validate_user_id(user_id)
        return await self._store.list_tokens(user_id)

    async def owner_of(self, token_id: str) -> str:
        """The user owning a token (for the operator command, which names tokens by id).

        Raises:
            NotFound: (`token_not_found`) no such token.
        """
        info = await self._store.get_token(check_token_id(token_id))
        if info is None:
            raise NotFound("no such token", reason="token_not_found")
        return info.user_id

    async def revoke(self, caller: str, user_id: str, token_id: str) -> TokenInfo:
        """Revoke a token and every session made from it; revoking twice succeeds.

        Raises:
            NotFound: (`token_not_found`) the user has no such token.
        """
        validate_user_id(user_id)
        shown = [token_id] if _TOKEN_ID_RE.fullmatch(token_id) else []
        record = audit_record(caller, user_id, "tokens.revoke", shown)
        async with audit_failures(self._store, record):
            check_token_id(token_id)
            info = await self._store.revoke_token(user_id, token_id, self._clock(), audit=record)
            if info is None:
                raise NotFound("no such token", reason="token_not_found")
        return info

    async def authenticate(self, token: str) -> Authentication:
        """Who a token belongs to, or why it is refused. Never raises for a bad token."""
        if not is_well_formed_token(token):
            return Authentication.refused(AuthFailure.MALFORMED)
        info = await self._store.find_token(self._hasher.token_digest(token))
        if info is None:
            return Authentication.refused(AuthFailure.UNKNOWN)
        now = self._clock()
        failure = info.failure_at(now)
        if failure is not None:
            # The holder may learn which token it was (for the debug header), nothing more.
            return Authentication(failure=failure, token_id=info.id, token_prefix=info.prefix)
        await touch_quietly(self._store, info, now)
        return Authentication(
            failure=None,
            user_id=info.user_id,
            token_id=info.id,
            token_prefix=info.prefix,
            scopes=info.scopes,
            expires_at=info.expires_at,
        )


async def touch_quietly(store: TokenStore, info: TokenInfo, now: float) -> None:
    """Record a use at most once per `LAST_USED_RESOLUTION`; a failure never refuses a request."""
    if info.last_used_at is not None and now - info.last_used_at < LAST_USED_RESOLUTION:
        return
    try:
        await store.touch_token(info.id, now, now - LAST_USED_RESOLUTION)
    except Exception as err:
        _log.warning(
            "could not record a token's last use",
            extra={"fields": {"token_id": info.id, "error": type(err).__name__}},
        )
