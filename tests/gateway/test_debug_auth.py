"""The `X-Debug-Auth` header (`debug_auth.py`): how a request was authenticated, never more than
8 characters of a token."""

from __future__ import annotations

import pytest

from services.gateway.auth import (
    AuthFailure,
    AuthMethod,
    PresentedCredential,
    Principal,
)
from services.gateway.debug_auth import describe_failure, describe_success, wants_debug

TOKEN = "sk-aic-" + "Q" * 20 + "abcdefghijklmnopqrstuvw"


def _principal(method: AuthMethod = AuthMethod.BEARER) -> Principal:
    return Principal(
        user_id="alice",
        token_id="tok_0123",
        token_prefix=TOKEN[:8],
        scopes=frozenset({"credentials:read", "llm:invoke"}),
        method=method,
    )


def test_debug_success_describes_method_token_user_scopes() -> None:
    text = describe_success(_principal())
    assert text == (
        "result=ok; method=bearer; token_id=tok_0123; token_prefix=sk-aic-Q; user_id=alice; "
        "scopes=credentials:read,llm:invoke"
    )


@pytest.mark.parametrize("failure", list(AuthFailure))
def test_debug_failure_names_reason_and_at_most_8_characters(failure: AuthFailure) -> None:
    text = describe_failure(failure, presented=PresentedCredential(AuthMethod.X_API_KEY, TOKEN))
    assert f"reason={failure.value}" in text
    assert "method=x-api-key" in text
    assert "token_prefix=sk-aic-Q;" in text
    for start in range(len(TOKEN) - 8):
        assert TOKEN[start : start + 9] not in text


def test_debug_failure_shows_nothing_of_short_tokens_or_sessions() -> None:
    short = "sk-aic-short"
    assert "sk-aic" not in describe_failure(
        AuthFailure.MALFORMED_TOKEN, presented=PresentedCredential(AuthMethod.BEARER, short)
    )
    session = "s" * 40
    text = describe_failure(
        AuthFailure.EXPIRED, presented=PresentedCredential(AuthMethod.SESSION, session)
    )
    assert "sss" not in text and "method=session" in text


def test_debug_missing_scope_names_the_scope() -> None:
    text = describe_failure(
        AuthFailure.MISSING_SCOPE, principal=_principal(), detail="tokens:manage"
    )
    assert "reason=missing scope; detail=tokens:manage" in text
    assert "user_id=alice" in text


def test_debug_header_text_is_sanitised() -> None:
    principal = Principal("bob;x=1\r\n", "tok", "sk-aic-x", frozenset(), AuthMethod.SESSION)
    text = describe_success(principal)
    assert "\r" not in text and "\n" not in text and "x=1" not in text.split("user_id=")[1]


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("TRUE", True), ("1", True), ("false", False), ("", False), (None, False)],
)
def test_wants_debug(value: str | None, expected: bool) -> None:
    assert wants_debug(value) is expected
