"""API tokens: format, scopes, hashing, lifetimes; then through a real vault."""

from __future__ import annotations

import base64

import pytest

from services.common.errors import InvalidArgument
from services.vault.tokens import (
    ALL_SCOPES,
    SecretHasher,
    display_prefix,
    is_well_formed_token,
    new_token,
    parse_lifetime,
    parse_scopes,
)

PEPPER = bytes(range(32))


def test_new_token_has_prefix_and_32_random_url_safe_bytes() -> None:
    token = new_token()
    assert token.startswith("sk-aic-")
    body = token.removeprefix("sk-aic-")
    assert len(base64.urlsafe_b64decode(body + "=")) == 32
    assert is_well_formed_token(token)
    assert display_prefix(token) == token[:8]
    assert len({new_token() for _ in range(100)}) == 100


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sk-aic-",
        "sk-aic-short",
        "sk-aix-" + "a" * 43,
        "SK-AIC-" + "a" * 43,
        "sk-aic-" + "a" * 42,
        "sk-aic-" + "a" * 42 + "!",
        "sk-aic-" + "a" * 43 + "\n",
        " sk-aic-" + "a" * 43,
        "sk-aic-" + "a" * 300,
    ],
)
def test_malformed_tokens_are_recognised(text: str) -> None:
    assert not is_well_formed_token(text)


def test_empty_scopes_mean_all_and_order_is_canonical() -> None:
    assert parse_scopes([]) == ALL_SCOPES
    assert set(ALL_SCOPES) == {
        "credentials:read",
        "credentials:write",
        "providers:read",
        "providers:write",
        "llm:invoke",
        "tokens:manage",
    }
    assert parse_scopes(["llm:invoke", "credentials:read", "llm:invoke"]) == (
        "credentials:read",
        "llm:invoke",
    )


def test_unknown_scope_is_invalid_argument_naming_it() -> None:
    with pytest.raises(InvalidArgument, match="credentials:admin"):
        parse_scopes(["credentials:read", "credentials:admin"])


def test_hasher_is_keyed_and_separates_tokens_from_sessions() -> None:
    token = new_token()
    hasher = SecretHasher(PEPPER)
    assert hasher.token_digest(token) == SecretHasher(PEPPER).token_digest(token)
    assert hasher.token_digest(token) != SecretHasher(bytes(32)).token_digest(token)
    assert hasher.token_digest(token) != hasher.session_digest(token)
    assert len(hasher.token_digest(token)) == 32
    assert PEPPER.hex() not in repr(hasher)
    with pytest.raises(ValueError):
        SecretHasher(b"short")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30d", 30 * 86400),
        ("12h", 12 * 3600),
        ("45m", 45 * 60),
        ("90s", 90),
        ("2w", 14 * 86400),
        ("3600", 3600),
        ("never", 0),
        ("0", 0),
    ],
)
def test_lifetimes_parse(text: str, seconds: int) -> None:
    assert parse_lifetime(text) == seconds


@pytest.mark.parametrize("text", ["", "d", "-1d", "1y", "1.5h", "30 days", "0d"])
def test_bad_lifetimes_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_lifetime(text)
