"""Token scopes (SPEC 2.1): one list, spelled exactly, for the vault and the gateway."""

from __future__ import annotations

import pytest

from services.common.errors import InvalidArgument
from services.common.scopes import (
    ALL_SCOPES,
    Scope,
    canonical_scopes,
    granted_scopes,
    scopes_problem,
)


def test_the_scopes_are_spec_2_1s_in_canonical_order() -> None:
    assert ALL_SCOPES == (
        "credentials:read",
        "credentials:write",
        "providers:read",
        "providers:write",
        "llm:invoke",
        "tokens:manage",
    )
    # mypy takes a StrEnum member and a str literal for disjoint; the test is that they are equal.
    assert Scope.LLM_INVOKE == "llm:invoke"  # type: ignore[comparison-overlap]


def test_requested_scopes_come_back_deduplicated_in_canonical_order() -> None:
    assert canonical_scopes(["llm:invoke", "credentials:read", "llm:invoke"]) == (
        "credentials:read",
        "llm:invoke",
    )
    assert granted_scopes(["tokens:manage"]) == ("tokens:manage",)


def test_none_requested_means_every_scope_for_a_new_token() -> None:
    # gRPC cannot tell an empty list from an absent one: empty grants all (SPEC 2.1). The
    # gateway refuses an explicit JSON `"scopes": []` before calling, which is a REST rule.
    assert granted_scopes([]) == ALL_SCOPES
    assert canonical_scopes([]) == ()


@pytest.mark.parametrize(
    "scope",
    [
        "credentials:admin",
        "LLM:INVOKE",  # case matters
        # Disagreement found: the vault stripped spaces and dropped blank entries, the gateway
        # refused them. The rule is the exact spelling (the admin CLI strips its own input).
        " llm:invoke",
        "llm:invoke ",
        "",
        "llm_invoke",
    ],
)
def test_unknown_scopes_are_refused_naming_the_first(scope: str) -> None:
    problem = scopes_problem(["credentials:read", scope, "bogus:two"])
    assert problem is not None and repr(scope) in problem
    with pytest.raises(InvalidArgument, match="unknown scope"):
        granted_scopes(["credentials:read", scope])


def test_a_long_unknown_scope_is_shortened_in_the_message() -> None:
    problem = scopes_problem(["x" * 500])
    assert problem is not None and "x" * 65 not in problem
