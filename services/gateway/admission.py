"""Admission of one request: authentication, rate limits, scope and the CSRF Origin check.

Every authenticated endpoint (REST v2, and the OpenAI/Anthropic endpoints of `model_api/`)
calls `Admission.admit` first. In order:

1. the credential is read (Bearer, then `x-api-key`, then the session cookie);
2. the vault's verdict (cached briefly). A failure (or a malformed credential) takes a token
   from the failure bucket of the client's address (IPv6 by /64, `client_address.py`) and is
   401 `unauthorized` with `WWW-Authenticate`, or 429 `rate_limited` once that bucket is
   empty. A credential that authenticates never consults that bucket: behind a NAT or a
   load balancer every user shares one address, and one client's garbage must not lock the
   others out;
3. the token's own bucket, then the user's (all of the user's tokens and sessions together):
   empty is 429 `rate_limited` with `Retry-After`;
4. the scope: missing is 403 `forbidden` naming it;
5. a session-authenticated request that changes state must carry `Origin` equal to the
   configured origin, else 403.

Refusals are raised as `ApiError` carrying the headers the response needs (`X-RateLimit-*`,
`Retry-After`, `WWW-Authenticate`, `X-Debug-Auth`); the caller renders them in its own shape.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.types import Scope

from services.gateway.auth import (
    Authenticator,
    AuthFailure,
    AuthMethod,
    PresentedCredential,
    Principal,
    extract_credential,
    session_cookie_name,
)
from services.gateway.client_address import address_key
from services.gateway.debug_auth import HEADER as DEBUG_HEADER
from services.gateway.debug_auth import describe_failure, describe_success, wants_debug
from services.gateway.errors import ApiError
from services.gateway.observability import USER_SCOPE_KEY, Metrics
from services.gateway.rate_limit import RateLimiter

#: ASGI scope key of the headers an admitted request's answers carry.
ADMITTED_HEADERS_KEY = "aicreds.admitted_headers"
STATE_CHANGING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_REALM = 'Bearer realm="aicreds"'

_log = logging.getLogger("aicreds.gateway.auth")

_MESSAGES: dict[AuthFailure, str] = {
    AuthFailure.NO_CREDENTIALS: (
        "no API token: send 'Authorization: Bearer <token>' or 'x-api-key: <token>'"
    ),
    AuthFailure.MALFORMED_HEADER: (
        "malformed credentials: use 'Authorization: Bearer <token>' or 'x-api-key: <token>'"
    ),
    AuthFailure.SESSION_NOT_ALLOWED: "this endpoint needs an API token, not a session",
}
_INVALID_TOKEN = (
    "invalid API token (unknown, revoked or expired); send 'X-Debug-Auth: true' for the reason"
)
_INVALID_SESSION = "session ended or expired; log in again"


@dataclass(frozen=True)
class Admitted:
    """An admitted request: who it is, and the headers its response must carry."""

    principal: Principal
    headers: dict[str, str] = field(default_factory=dict)


class Admission:
    """Decides whether a request may proceed; see the module docstring for the order."""

    def __init__(
        self,
        *,
        authenticator: Authenticator,
        token_limiter: RateLimiter,
        address_limiter: RateLimiter,
        origin: str,
        metrics: Metrics,
        cookie_secure: bool = True,
        user_limiter: RateLimiter | None = None,
    ) -> None:
        self.authenticator = authenticator
        self._cookie_secure = cookie_secure
        self._session_cookie = session_cookie_name(cookie_secure)
        self._token_limiter = token_limiter
        self._address_limiter = address_limiter
        self._user_limiter = user_limiter
        self._origin = origin
        self._metrics = metrics

    async def admit(
        self, request: Request, *, scope: str | None, allow_session: bool = True
    ) -> Admitted:
        """Admit the request or raise the `ApiError` that refuses it.

        An admitted request's scope records its user (for the access log) and the admission's
        headers (which every answer carries, an error too: see `admitted_headers`).
        """
        debug = wants_debug(request.headers.get(DEBUG_HEADER))
        presented = extract_credential(
            request.headers, request.cookies, session_cookie=self._session_cookie
        )
        if isinstance(presented, AuthFailure):
            if presented is not AuthFailure.NO_CREDENTIALS:
                await self._count_failure(request, None, debug)
            raise self._unauthorized(presented, None, debug)
        if not allow_session and presented.method is AuthMethod.SESSION:
            raise self._unauthorized(AuthFailure.SESSION_NOT_ALLOWED, presented, debug)

        result = await self.authenticator.authenticate(presented)
        if result.principal is None:
            await self._count_failure(request, presented, debug)
            raise self._unauthorized(result.failure or AuthFailure.UNKNOWN, presented, debug)
        principal = result.principal

        decision = await self._token_limiter.hit(principal.token_id)
        limit = "token"
        if decision.allowed and self._user_limiter is not None:
            user_decision = await self._user_limiter.hit(principal.user_id)
            if not user_decision.allowed or user_decision.remaining < decision.remaining:
                decision, limit = user_decision, "user"
        headers = decision.headers()
        if not decision.allowed:
            self._metrics.rate_limited.labels(limit=limit).inc()
            if debug:
                headers[DEBUG_HEADER] = describe_success(principal)
            raise ApiError(
                429,
                "rate_limited",
                f"rate limit exceeded; retry in {headers['Retry-After']} s",
                headers=headers,
            )

        if scope is not None and not principal.has_scope(scope):
            self._metrics.auth_failures.labels(reason="missing_scope").inc()
            if debug:
                headers[DEBUG_HEADER] = describe_failure(
                    AuthFailure.MISSING_SCOPE, principal=principal, detail=scope
                )
            raise ApiError(
                403, "forbidden", f"this token lacks the scope '{scope}'", headers=headers
            )

        if principal.method is AuthMethod.SESSION and request.method in STATE_CHANGING_METHODS:
            origin = request.headers.get("origin", "").rstrip("/")
            if origin != self._origin:
                if debug:
                    headers[DEBUG_HEADER] = describe_success(principal)
                raise ApiError(
                    403,
                    "forbidden",
                    "cross-origin request refused: a cookie-authenticated change needs "
                    "the Origin of this gateway",
                    headers=headers,
                )

        if debug:
            headers[DEBUG_HEADER] = describe_success(principal)
        request.scope[USER_SCOPE_KEY] = principal.user_id
        request.scope[ADMITTED_HEADERS_KEY] = headers
        return Admitted(principal, headers)

    async def _count_failure(
        self, request: Request, presented: PresentedCredential | None, debug: bool
    ) -> None:
        """Take a token from the client address's failure bucket; raise 429 when it is empty.

        The address's key is made here, on a failure only: a valid credential is never counted,
        so the admissions that pass (nearly all) do not parse the address.
        """
        address = address_key(request.client.host if request.client else "unknown")
        guard = await self._address_limiter.hit(address)
        if guard.allowed:
            return
        self._metrics.rate_limited.labels(limit="address").inc()
        headers = guard.headers()
        if debug:
            headers[DEBUG_HEADER] = describe_failure(
                AuthFailure.ADDRESS_LIMITED, presented=presented
            )
        raise ApiError(
            429,
            "rate_limited",
            "too many failed authentications from this address; retry later",
            headers=headers,
        )

    def _unauthorized(
        self, failure: AuthFailure, presented: PresentedCredential | None, debug: bool
    ) -> ApiError:
        self._metrics.auth_failures.labels(reason=failure.name.lower()).inc()
        _log.info(
            "authentication failed",
            extra={
                "fields": {
                    "reason": failure.value,
                    "method": presented.method.value if presented else None,
                }
            },
        )
        headers: dict[str, str] = {}
        if failure is AuthFailure.NO_CREDENTIALS:
            headers["WWW-Authenticate"] = _REALM
        else:
            headers["WWW-Authenticate"] = f'{_REALM}, error="invalid_token"'
        if presented is not None and presented.method is AuthMethod.SESSION:
            if failure is not AuthFailure.SESSION_NOT_ALLOWED:
                # Tell the browser to drop a cookie that no longer works.
                headers["Set-Cookie"] = expired_session_cookie(self._cookie_secure)
            message = _MESSAGES.get(failure, _INVALID_SESSION)
        else:
            message = _MESSAGES.get(failure, _INVALID_TOKEN)
        if debug:
            headers[DEBUG_HEADER] = describe_failure(failure, presented=presented)
        return ApiError(401, "unauthorized", message, headers=headers)


def admitted_headers(scope: Scope) -> Mapping[str, str]:
    """The headers of the request's admission (rate limits, debug), none before it."""
    headers: Mapping[str, str] = scope.get(ADMITTED_HEADERS_KEY, {})
    return headers


def session_cookie(value: str, *, max_age: int, secure: bool) -> str:
    """The `Set-Cookie` value for a new session (SPEC 2.5)."""
    # `__Host-` (when Secure) needs exactly this: Secure, Path=/ and no Domain.
    parts = [
        f"{session_cookie_name(secure)}={value}",
        "Path=/",
        f"Max-Age={max(0, max_age)}",
        "HttpOnly",
        "SameSite=Strict",
    ]
    if secure:
        parts.append("Secure")
    return "; ".join(parts)


def expired_session_cookie(secure: bool = False) -> str:
    parts = [
        f"{session_cookie_name(secure)}=",
        "Path=/",
        "Max-Age=0",
        "HttpOnly",
        "SameSite=Strict",
    ]
    if secure:
        parts.append("Secure")
    return "; ".join(parts)
