"""The `X-Debug-Auth` response header (SPEC 2.1): how a request was authenticated.

Sent only when the request carries `X-Debug-Auth: true`. It is a `; `-separated list of
`name=value` pairs, for example

    result=ok; method=bearer; token_id=tok_3f..; token_prefix=sk-aic-A; user_id=alice;
    scopes=credentials:read,llm:invoke

    result=denied; method=bearer; token_prefix=sk-aic-Z; reason=revoked

It never holds more of a token than its first 8 characters (and nothing of a token so short
that 8 characters would be most of it), nothing of a session secret, and no credential value.
"""

from __future__ import annotations

from collections.abc import Iterable

from services.gateway.auth import AuthFailure, PresentedCredential, Principal

HEADER = "X-Debug-Auth"


def wants_debug(value: str | None) -> bool:
    return value is not None and value.strip().lower() in ("true", "1", "yes")


def _clean(text: str, limit: int = 128) -> str:
    """Header-safe text: printable ASCII without the separators this header uses."""
    return "".join(ch if " " <= ch < "\x7f" and ch not in ";=," else "?" for ch in text[:limit])


def _render(pairs: Iterable[tuple[str, str]]) -> str:
    return "; ".join(f"{name}={value}" for name, value in pairs if value != "")


def describe_success(principal: Principal) -> str:
    return _render(
        [
            ("result", "ok"),
            ("method", principal.method.value),
            ("token_id", _clean(principal.token_id)),
            ("token_prefix", _clean(principal.token_prefix[:8])),
            ("session_id", _clean(principal.session_id)),
            ("user_id", _clean(principal.user_id)),
            ("scopes", ",".join(_clean(s) for s in sorted(principal.scopes))),
        ]
    )


def describe_failure(
    failure: AuthFailure,
    *,
    presented: PresentedCredential | None = None,
    principal: Principal | None = None,
    detail: str = "",
) -> str:
    """A refused request: the reason, and what is known about who tried."""
    pairs: list[tuple[str, str]] = [("result", "denied")]
    if principal is not None:
        pairs += [
            ("method", principal.method.value),
            ("token_id", _clean(principal.token_id)),
            ("token_prefix", _clean(principal.token_prefix[:8])),
            ("user_id", _clean(principal.user_id)),
            ("scopes", ",".join(_clean(s) for s in sorted(principal.scopes))),
        ]
    elif presented is not None:
        pairs.append(("method", presented.method.value))
        prefix = presented.shown_prefix
        if prefix is not None:
            pairs.append(("token_prefix", _clean(prefix)))
    pairs.append(("reason", failure.value))
    if detail:
        pairs.append(("detail", _clean(detail)))
    return _render(pairs)
