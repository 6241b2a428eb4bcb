"""The scopes an API token grants (SPEC 2.1). Pure: no I/O, no grpc.

One list for the vault (which stores and checks them) and the gateway (which asks for them per
endpoint and validates REST token requests). Scopes are spelled exactly as listed: no case
folding, no trimming (`" llm:invoke"` is not a scope). A token minted by a token (or a session)
holds only scopes its parent holds (`child_scopes`): minting never widens access.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from services.common.errors import InvalidArgument, PermissionDenied


class Scope(StrEnum):
    """One right a token grants, spelled as in the REST API."""

    CREDENTIALS_READ = "credentials:read"
    CREDENTIALS_WRITE = "credentials:write"
    PROVIDERS_READ = "providers:read"
    PROVIDERS_WRITE = "providers:write"
    LLM_INVOKE = "llm:invoke"
    TOKENS_MANAGE = "tokens:manage"


ALL_SCOPES: tuple[str, ...] = tuple(scope.value for scope in Scope)
"""Every scope, in canonical order (the order replies list them in)."""


def _shown(scope: str) -> str:
    return repr(scope[:64]) + ("..." if len(scope) > 64 else "")


def scopes_problem(requested: Iterable[str]) -> str | None:
    """Why `requested` is not a list of scopes (it names the first unknown one), or None."""
    for scope in requested:
        if scope not in ALL_SCOPES:
            return f"unknown scope {_shown(scope)}; known scopes: {', '.join(ALL_SCOPES)}"
    return None


def canonical_scopes(requested: Iterable[str]) -> tuple[str, ...]:
    """`requested` without duplicates, in canonical order; empty stays empty.

    Raises:
        InvalidArgument: a scope is unknown (the message names it).
    """
    wanted = list(requested)
    problem = scopes_problem(wanted)
    if problem:
        raise InvalidArgument(problem)
    return tuple(scope for scope in ALL_SCOPES if scope in wanted)


def granted_scopes(requested: Iterable[str]) -> tuple[str, ...]:
    """What a new token is granted: `requested` in canonical order, or every scope when none is
    requested (SPEC 2.1: all of them unless the creator narrows them).

    Raises:
        InvalidArgument: a scope is unknown (the message names it).
    """
    return canonical_scopes(requested) or ALL_SCOPES


def scopes_beyond(requested: Iterable[str], held: Iterable[str]) -> tuple[str, ...]:
    """The known scopes of `requested` that `held` lacks, in canonical order."""
    wanted, have = set(requested), set(held)
    return tuple(scope for scope in ALL_SCOPES if scope in wanted and scope not in have)


def child_scopes(requested: Iterable[str], held: Iterable[str]) -> tuple[str, ...]:
    """What a token minted by a parent holding `held` is granted: `requested` in canonical
    order, or all of `held` when none is requested (SPEC 2.1: a new token has all of its
    creator's scopes unless the creator narrows them).

    Raises:
        InvalidArgument: a scope is unknown (the message names it).
        PermissionDenied: (`forbidden`) a requested scope is one the parent lacks (the message
            names every such scope).
    """
    wanted = canonical_scopes(requested)
    have = set(held)
    if not wanted:
        return tuple(scope for scope in ALL_SCOPES if scope in have)
    beyond = scopes_beyond(wanted, have)
    if beyond:
        raise PermissionDenied(
            f"a token cannot grant scopes its creator lacks: {', '.join(beyond)}"
        )
    return wanted
