"""Credential keys made only of dots (`.`, `..`, ...) are refused: HTTP clients normalise such
path segments away, so `/ai-credentials/..` cannot address the key `..`. The placeholder syntax
uses the same rule."""

from __future__ import annotations

import re

import pytest

from services.common.credential_rules import (
    KEY_JSON_PATTERN,
    credentials_problem,
    is_valid_key,
    key_problem,
)
from services.common.placeholders import PLACEHOLDER, referenced_keys


@pytest.mark.parametrize("key", [".", "..", "...", "." * 128])
def test_keys_of_dots_only_are_refused(key: str) -> None:
    assert not is_valid_key(key)
    assert key_problem(key) is not None
    assert not re.fullmatch(KEY_JSON_PATTERN, key)
    assert credentials_problem({key: "v"}) is not None
    assert PLACEHOLDER.fullmatch("{{credential:" + key + "}}") is None
    assert referenced_keys(["Bearer {{credential:" + key + "}}"]) == []


@pytest.mark.parametrize("key", [".a", "a.", "..a", "a..", ".-", "_.", ".0.", "a.b"])
def test_keys_with_dots_and_something_else_stay_valid(key: str) -> None:
    assert is_valid_key(key)
    assert re.fullmatch(KEY_JSON_PATTERN, key)
    assert referenced_keys(["{{credential:" + key + "}}"]) == [key]


def test_the_message_says_why() -> None:
    assert key_problem("..") == "credential key '..' is invalid: a key is not made only of dots"
    # Other bad keys keep the wording the web UI repeats.
    assert key_problem("a b") == (
        "credential key 'a b' is invalid: use 1-128 characters of A-Z a-z 0-9 _ . -"
    )
