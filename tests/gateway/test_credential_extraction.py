"""Reading the presented credential (`auth.extract_credential`): Bearer, then x-api-key, then
the session cookie; malformed headers; nothing of the secret in a repr."""

from __future__ import annotations

import pytest

from services.gateway.auth import (
    SESSION_COOKIE,
    AuthFailure,
    AuthMethod,
    PresentedCredential,
    extract_credential,
)

TOKEN = "sk-aic-" + "Q" * 20 + "abcdefghijklmnopqrstuvw"


def test_bearer_wins_over_api_key_and_cookie() -> None:
    found = extract_credential(
        {"authorization": f"Bearer {TOKEN}", "x-api-key": "other"}, {SESSION_COOKIE: "s"}
    )
    assert found == PresentedCredential(AuthMethod.BEARER, TOKEN)


def test_bearer_scheme_is_case_insensitive() -> None:
    assert extract_credential({"authorization": f"bearer {TOKEN}"}, {}) == PresentedCredential(
        AuthMethod.BEARER, TOKEN
    )


def test_api_key_then_cookie() -> None:
    assert extract_credential({"x-api-key": TOKEN}, {}) == PresentedCredential(
        AuthMethod.X_API_KEY, TOKEN
    )
    assert extract_credential({}, {SESSION_COOKIE: "sess"}) == PresentedCredential(
        AuthMethod.SESSION, "sess"
    )


@pytest.mark.parametrize(
    "headers",
    [
        {"authorization": f"Basic {TOKEN}"},
        {"authorization": "Bearer"},
        {"authorization": "Bearer "},
        {"authorization": TOKEN},
        {"authorization": "Bearer two words"},
        {"x-api-key": ""},
        {"x-api-key": "a\x01b"},
    ],
)
def test_malformed_headers(headers: dict[str, str]) -> None:
    assert extract_credential(headers, {}) is AuthFailure.MALFORMED_HEADER


def test_nothing_sent() -> None:
    assert extract_credential({}, {}) is AuthFailure.NO_CREDENTIALS


def test_presented_credential_repr_hides_the_secret() -> None:
    assert TOKEN not in repr(PresentedCredential(AuthMethod.BEARER, TOKEN))
