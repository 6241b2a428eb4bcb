"""Who is calling: the client's credential, its check against the vault, and a short cache.

A REST client presents one of (first match wins):

1. `Authorization: Bearer <token>`   method `bearer`
2. `x-api-key: <token>`              method `x-api-key`
3. the session cookie                method `session`

`Authenticator.authenticate` asks the vault's `Authenticate` and keeps each answer for
`cache_ttl` seconds (never past the credential's own expiry), keyed by a SHA-256 of the secret
so the cache holds no secret. A token revoked anywhere therefore stops working on every replica
within `cache_ttl`; one revoked through this replica stops at once, with the tokens minted
from it (`forget_user`), and, with a revocation feed (`revocations.py`), on the other replicas
too (`forget_user`, `forget_cache_key`, and `forget_all` after the feed missed messages).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import cached_property
from typing import Protocol

from aicreds.vault.v1 import auth_pb2

SESSION_COOKIE = "aicreds_session"
"""The session cookie's name without `Secure` (local http only, GATEWAY_COOKIE_SECURE=false)."""
SECURE_SESSION_COOKIE = "__Host-" + SESSION_COOKIE
"""The session cookie's name with `Secure` (the default): a browser accepts a `__Host-` cookie
only from a secure origin, with `Path=/` and no `Domain`, so neither a sibling subdomain nor a
plain-http page can set or shadow it (cookie tossing). Browsers refuse the prefix on http."""


def session_cookie_name(secure: bool) -> str:
    """The one session cookie name in force: `SECURE_SESSION_COOKIE` when the cookie is
    `Secure`, `SESSION_COOKIE` otherwise. The other name is never read."""
    return SECURE_SESSION_COOKIE if secure else SESSION_COOKIE


_MAX_SECRET_LEN = 512
_PLAUSIBLE_SECRET = re.compile(f"[!-~]{{1,{_MAX_SECRET_LEN}}}")


class AuthMethod(StrEnum):
    BEARER = "bearer"
    X_API_KEY = "x-api-key"
    SESSION = "session"


class AuthFailure(StrEnum):
    """Why a request is not authenticated (or not allowed), as X-Debug-Auth words it."""

    NO_CREDENTIALS = "no credentials sent"
    MALFORMED_HEADER = "malformed header"
    MALFORMED_TOKEN = "malformed token"
    UNKNOWN = "unknown token"
    REVOKED = "revoked"
    EXPIRED = "expired"
    MISSING_SCOPE = "missing scope"
    SESSION_NOT_ALLOWED = "a session cannot be used here"
    ADDRESS_LIMITED = "too many failed authentications from this address"


_FAILURE_BY_VAULT: Mapping[int, AuthFailure] = {
    auth_pb2.AUTH_FAILURE_MALFORMED: AuthFailure.MALFORMED_TOKEN,
    auth_pb2.AUTH_FAILURE_UNKNOWN: AuthFailure.UNKNOWN,
    auth_pb2.AUTH_FAILURE_REVOKED: AuthFailure.REVOKED,
    auth_pb2.AUTH_FAILURE_EXPIRED: AuthFailure.EXPIRED,
}


@dataclass(frozen=True)
class PresentedCredential:
    """The secret a request carries and how it carried it."""

    method: AuthMethod
    secret: str = field(repr=False)

    @cached_property
    def cache_key(self) -> str:
        """A SHA-256 of the secret (computed once per request, on first use)."""
        kind = "session" if self.method is AuthMethod.SESSION else "token"
        return hashlib.sha256(f"{kind}\0{self.secret}".encode()).hexdigest()

    @property
    def shown_prefix(self) -> str | None:
        """The first 8 characters of a token, if it is long enough that they are not all of it."""
        if self.method is AuthMethod.SESSION or len(self.secret) < 24:
            return None
        return self.secret[:8]


@dataclass(frozen=True)
class Principal:
    """An authenticated client: a user acting through one token (or a session made from it)."""

    user_id: str
    token_id: str
    token_prefix: str
    scopes: frozenset[str]
    method: AuthMethod
    session_id: str = ""
    expires_at: float | None = None

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


@dataclass(frozen=True)
class AuthResult:
    """Either a principal or the reason there is none."""

    principal: Principal | None
    failure: AuthFailure | None
    presented: PresentedCredential | None


def _as_presented(result: AuthResult, presented: PresentedCredential) -> AuthResult:
    """A cached answer for this presentation: the same token may come as Bearer or x-api-key."""
    principal = result.principal
    if principal is not None and principal.method is not presented.method:
        principal = replace(principal, method=presented.method)
    return AuthResult(principal, result.failure, presented)


def extract_credential(
    headers: Mapping[str, str],
    cookies: Mapping[str, str],
    *,
    session_cookie: str = SESSION_COOKIE,
) -> PresentedCredential | AuthFailure:
    """The credential a request presents, or why it presents none usable; the session is read
    from the cookie named `session_cookie` only (`session_cookie_name`)."""
    authorization = headers.get("authorization")
    if authorization is not None:
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not _plausible(token):
            return AuthFailure.MALFORMED_HEADER
        return PresentedCredential(AuthMethod.BEARER, token)
    api_key = headers.get("x-api-key")
    if api_key is not None:
        api_key = api_key.strip()
        if not _plausible(api_key):
            return AuthFailure.MALFORMED_HEADER
        return PresentedCredential(AuthMethod.X_API_KEY, api_key)
    session = cookies.get(session_cookie)
    if session:
        if not _plausible(session):
            return AuthFailure.MALFORMED_HEADER
        return PresentedCredential(AuthMethod.SESSION, session)
    return AuthFailure.NO_CREDENTIALS


def session_cache_key(session: str) -> str:
    """The cache key of a session secret: what may name the session beyond this process."""
    return PresentedCredential(AuthMethod.SESSION, session).cache_key


def _plausible(secret: str) -> bool:
    """1 to 512 visible ASCII characters (no space, no control character)."""
    return _PLAUSIBLE_SECRET.fullmatch(secret) is not None


class VaultAuthenticate(Protocol):
    async def authenticate(
        self, *, token: str | None = None, session: str | None = None
    ) -> auth_pb2.AuthenticateResponse: ...


@dataclass
class _Entry:
    result: AuthResult
    valid_until: float


class Authenticator:
    """Checks presented credentials against the vault, remembering answers for a few seconds."""

    def __init__(
        self,
        vault: VaultAuthenticate,
        *,
        cache_ttl: float,
        clock: Callable[[], float] = time.time,
        max_entries: int = 50_000,
    ) -> None:
        self._vault = vault
        self._ttl = cache_ttl
        self._clock = clock
        self._max_entries = max_entries
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        # user id -> the cache keys of that user's authenticated answers (forget_user's index)
        self._by_user: dict[str, set[str]] = {}

    def __repr__(self) -> str:
        return f"Authenticator(cache_ttl={self._ttl}, entries={len(self._cache)})"

    async def authenticate(self, presented: PresentedCredential) -> AuthResult:
        """The vault's verdict on `presented`; raises `ApiError` if the vault cannot answer."""
        now = self._clock()
        key = presented.cache_key
        entry = self._cache.get(key)
        if entry is not None and entry.valid_until > now:
            self._cache.move_to_end(key)
            return _as_presented(entry.result, presented)
        if presented.method is AuthMethod.SESSION:
            reply = await self._vault.authenticate(session=presented.secret)
        else:
            reply = await self._vault.authenticate(token=presented.secret)
        result = self._result(presented, reply)
        valid_until = now + self._ttl
        if result.principal is not None and result.principal.expires_at is not None:
            valid_until = min(valid_until, result.principal.expires_at)
        if self._ttl > 0:
            self._drop(key)
            self._cache[key] = _Entry(result, valid_until)
            if result.principal is not None:
                self._by_user.setdefault(result.principal.user_id, set()).add(key)
            while len(self._cache) > self._max_entries:
                self._drop(next(iter(self._cache)))
        return result

    def _drop(self, key: str) -> None:
        entry = self._cache.pop(key, None)
        if entry is not None and entry.result.principal is not None:
            keys = self._by_user.get(entry.result.principal.user_id)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_user[entry.result.principal.user_id]

    def forget_user(self, user_id: str) -> None:
        """Drop every cached answer for a user's tokens and sessions, e.g. after a revocation
        that cascades to tokens this replica cannot name (those minted from the revoked one)."""
        for key in list(self._by_user.get(user_id, ())):
            self._drop(key)

    def forget_session(self, session: str) -> None:
        """Drop the cached answer for a session secret, e.g. after logging it out."""
        self.forget_cache_key(session_cache_key(session))

    def forget_cache_key(self, cache_key: str) -> None:
        """Drop the cached answer stored under `cache_key` (a `PresentedCredential.cache_key`),
        e.g. a session another replica logged out."""
        self._drop(cache_key)

    def forget_all(self) -> int:
        """Drop every cached answer (each costs one vault call when next presented); return how
        many there were."""
        dropped = len(self._cache)
        self._cache.clear()
        self._by_user.clear()
        return dropped

    @staticmethod
    def _result(presented: PresentedCredential, reply: auth_pb2.AuthenticateResponse) -> AuthResult:
        if not reply.authenticated:
            failure = _FAILURE_BY_VAULT.get(reply.failure, AuthFailure.UNKNOWN)
            return AuthResult(None, failure, presented)
        expires_at = (
            reply.expires_at.seconds + reply.expires_at.nanos / 1e9
            if reply.HasField("expires_at")
            else None
        )
        principal = Principal(
            user_id=reply.user_id,
            token_id=reply.token_id,
            token_prefix=reply.token_prefix[:8],
            scopes=frozenset(reply.scopes),
            method=presented.method,
            session_id=reply.session_id,
            expires_at=expires_at,
        )
        return AuthResult(principal, None, presented)
