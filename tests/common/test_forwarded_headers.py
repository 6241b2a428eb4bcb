"""The client headers that go upstream (SPEC 2.6): one allowlist for the gateway and the router."""

from __future__ import annotations

from services.common.forwarded_headers import (
    FORWARDED_CLIENT_HEADERS,
    FORWARDED_CLIENT_HEADERS_RAW,
    NEVER_FORWARDED,
    forwarded_client_headers,
    is_forwarded_client_header,
)


def test_the_allowlist_is_spec_2_6s() -> None:
    assert FORWARDED_CLIENT_HEADERS == {
        "content-type",
        "accept",
        "anthropic-version",
        "anthropic-beta",
        "openai-beta",
        "user-agent",
        "x-request-id",
    }
    assert {name.decode() for name in FORWARDED_CLIENT_HEADERS_RAW} == FORWARDED_CLIENT_HEADERS


def test_the_clients_own_credentials_are_never_on_it() -> None:
    assert not FORWARDED_CLIENT_HEADERS & NEVER_FORWARDED
    for name in ("Authorization", "x-api-key", "X-API-KEY", "Cookie", "proxy-authorization"):
        assert not is_forwarded_client_header(name)


def test_names_compare_case_insensitively() -> None:
    assert is_forwarded_client_header("Content-Type")
    assert is_forwarded_client_header("ANTHROPIC-VERSION")
    assert not is_forwarded_client_header("x-forwarded-for")


def test_asgi_raw_pairs_keep_their_order() -> None:
    raw = [
        (b"authorization", b"Bearer sk-client"),
        (b"content-type", b"application/json"),
        (b"anthropic-version", b"2023-06-01"),
        (b"cookie", b"s=1"),
        (b"x-api-key", b"sk-client"),
        (b"user-agent", b"openai-python/2"),
        (b"x-custom", b"1"),
    ]
    assert forwarded_client_headers(raw) == [
        (b"content-type", b"application/json"),
        (b"anthropic-version", b"2023-06-01"),
        (b"user-agent", b"openai-python/2"),
    ]
