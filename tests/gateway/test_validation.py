"""Checks of request bodies and parameters (`validation.py`, SPEC 2.2-2.4): the message names
the key, never the value."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from services.gateway.errors import ApiError
from services.gateway.rest_api.providers import parse_provider
from services.gateway.validation import (
    check_credential_key,
    parse_credential_map,
    parse_credential_value,
    parse_flag,
    parse_scopes,
)


def test_credential_map_is_parsed_and_checked() -> None:
    assert parse_credential_map({"credentials": {"a.b-c_D": "v v\tv"}}) == {"a.b-c_D": "v v\tv"}
    assert parse_credential_map({"credentials": {}}) == {}


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ([], "JSON object"),
        ({}, "credentials"),
        ({"credentials": []}, "credentials"),
        ({"credentials": {"bad key": "v"}}, "bad key"),
        ({"credentials": {"k" * 129: "v"}}, "kkkk"),
        ({"credentials": {"ok": "", "other": "x"}}, "'ok'"),
        ({"credentials": {"ok": 5}}, "'ok'"),
        ({"credentials": {"crlf": "SECRET\r\nX: y"}}, "'crlf'"),
        ({"credentials": {"nul": "SECRET\x00"}}, "'nul'"),
        ({"credentials": {"utf": "SECRET é"}}, "'utf'"),
        ({"credentials": {"big": "S" * (16 * 1024 + 1)}}, "'big'"),
    ],
)
def test_bad_credential_maps_name_the_key_never_the_value(body: object, named: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_credential_map(body)
    assert caught.value.status == 400 and caught.value.code == "invalid_argument"
    assert named in caught.value.message
    assert "SECRET" not in caught.value.message


def test_value_of_exactly_16_kib_is_accepted() -> None:
    assert len(parse_credential_value("k", {"value": "v" * 16 * 1024})) == 16 * 1024


@pytest.mark.parametrize("body", [{}, {"value": None}, {"value": ["x"]}, "x"])
def test_bad_single_values(body: object) -> None:
    with pytest.raises(ApiError):
        parse_credential_value("k", body)


@pytest.mark.parametrize("key", ["", "a/b", "a b", "é", "k" * 129])
def test_bad_keys(key: str) -> None:
    with pytest.raises(ApiError):
        check_credential_key(key)


def test_scopes_and_flags() -> None:
    assert parse_scopes({"scopes": ["llm:invoke", "credentials:read", "llm:invoke"]}) == [
        "credentials:read",
        "llm:invoke",
    ]
    assert parse_scopes({}) is None
    with pytest.raises(ApiError):
        parse_scopes({"scopes": ["root"]})
    with pytest.raises(ApiError):
        parse_scopes({"scopes": []})
    assert parse_flag("true", "masked") and not parse_flag(None, "masked")
    with pytest.raises(ApiError):
        parse_flag("maybe", "masked")


# Client text in messages: one rule for keys, scopes, field and header names
# (`services.common.credential_rules.describe`, the vault's too)


LONG_NAME = "X Custom\t" + "h" * 70  # a tab, and longer than 64 characters
SHOWN = "'X Custom\\t" + "h" * 55 + "'..."  # escaped, cut at 64 and marked


@pytest.mark.parametrize(
    "failure",
    [
        lambda: check_credential_key(LONG_NAME),
        lambda: parse_scopes({"scopes": [LONG_NAME]}),
        lambda: parse_provider(
            {"name": "p", "kind": "custom", "base_url": "https://x", "headers": {LONG_NAME: "v"}}
        ),
        lambda: parse_provider({"name": "p", LONG_NAME: 1}),
    ],
    ids=["credential key", "scope", "provider header", "provider field"],
)
def test_every_message_shows_client_text_the_same_way(failure: Callable[[], object]) -> None:
    # The provider checks once had their own copy of the rule: spaces became `?` and a cut
    # name had no `...`, so one name read differently depending on where it was refused.
    with pytest.raises(ApiError) as caught:
        failure()
    assert SHOWN in caught.value.message
