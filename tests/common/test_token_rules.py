"""`services.common.token_rules` (SPEC 2.4): a token's name and lifetime."""

from __future__ import annotations

import pytest

from services.common.errors import InvalidArgument
from services.common.token_rules import (
    MAX_LIFETIME_SECONDS,
    lifetime_problem,
    name_problem,
    validate_lifetime,
    validate_name,
)


@pytest.mark.parametrize("name", ["laptop", "x", " padded ", "x" * 128, "CI token – prod"])
def test_names_accepted(name: str) -> None:
    assert name_problem(name) is None and validate_name(name) == name


@pytest.mark.parametrize("name", ["", "   ", "\t", "x" * 129, "bell\x07", "line\nbreak", "\x7f"])
def test_names_refused_without_echoing_them(name: str) -> None:
    problem = name_problem(name)
    assert problem and (not name.strip() or name not in problem)
    with pytest.raises(InvalidArgument):
        validate_name(name)


@pytest.mark.parametrize("seconds", [0, 1, 3600, MAX_LIFETIME_SECONDS])
def test_lifetimes_accepted(seconds: int) -> None:
    assert lifetime_problem(seconds) is None and validate_lifetime(seconds) == seconds


@pytest.mark.parametrize("seconds", [-1, MAX_LIFETIME_SECONDS + 1, 100 * 365 * 86400])
def test_lifetimes_refused(seconds: int) -> None:
    assert lifetime_problem(seconds)
    with pytest.raises(InvalidArgument):
        validate_lifetime(seconds)
