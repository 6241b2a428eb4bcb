"""A credential value may not start or end with a space or tab: HTTP strips or refuses such
whitespace around a header value, so the call would fail upstream (SPEC 2.2's "a legal HTTP
header value"). Inner spaces and tabs stay legal. The message names the key, never the value."""

from __future__ import annotations

import re

import pytest

from services.common.credential_rules import (
    VALUE_JSON_PATTERN,
    credentials_problem,
    value_problem,
)

SECRET = "sk-live-0123456789abcdef"


@pytest.mark.parametrize(
    "value", [" " + SECRET, SECRET + " ", "\t" + SECRET, SECRET + "\t", " ", "\t", f" {SECRET} "]
)
def test_edge_whitespace_is_refused(value: str) -> None:
    problem = value_problem("k", value)
    assert problem is not None and "'k'" in problem
    assert SECRET not in problem
    assert not re.fullmatch(VALUE_JSON_PATTERN, value)
    assert credentials_problem({"k": value}) == problem


@pytest.mark.parametrize("value", ["a b", "a\tb", "x", "Bearer  x", "~", "a \t b"])
def test_inner_whitespace_stays_legal(value: str) -> None:
    assert value_problem("k", value) is None
    assert re.fullmatch(VALUE_JSON_PATTERN, value)
