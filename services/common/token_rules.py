"""What an API token's name and lifetime may be (SPEC 2.4). Pure: no I/O, no grpc.

The one home of the rule for the gateway (which checks REST token requests and documents the
rule in its OpenAPI schema) and the vault (which should enforce it before a token is stored):

- **Name**: 1-128 characters, not only white space (a list of tokens is read by name), and no
  control characters (names are shown in the UI and written to the audit log).
- **Lifetime**: `expires_in` seconds, 1 to 10 years; 0 at the gRPC boundary (or no `expires_in`
  in REST) is a token that never expires. Ten years is already "forever" for a credential that
  should be rotated; a longer bound only lets a typo (an extra digit) pass.

As in `services.common.credential_rules`, each check comes as `*_problem(...)` (the public
message or None) and `validate_*(...)` (raises `InvalidArgument`). A message never holds the name
itself: a careless user may paste a secret there.
"""

from __future__ import annotations

import re

from services.common.errors import InvalidArgument

MAX_TOKEN_NAME = 128
MAX_LIFETIME_SECONDS = 10 * 365 * 24 * 3600
"""The longest lifetime a token may be given (10 years of 365 days)."""
NEVER_EXPIRES = 0
"""`expires_in_seconds` of a token that never expires (the proto3 default)."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
NAME_JSON_PATTERN = r"^[^\x00-\x1f\x7f]*\S[^\x00-\x1f\x7f]*$"
"""`token name` as a JSON-schema `pattern`: no control character, not only white space."""


def name_problem(name: str) -> str | None:
    """Why `name` cannot name a token, or None."""
    if not name.strip():
        return "token name must not be blank"
    if len(name) > MAX_TOKEN_NAME:
        return f"token name is longer than {MAX_TOKEN_NAME} characters"
    if _CONTROL.search(name):
        return "token name must not contain control characters"
    return None


def lifetime_problem(expires_in_seconds: int) -> str | None:
    """Why a token cannot live `expires_in_seconds` (0: never expires), or None."""
    if expires_in_seconds == NEVER_EXPIRES or 1 <= expires_in_seconds <= MAX_LIFETIME_SECONDS:
        return None
    return f"expires_in must be between 1 and {MAX_LIFETIME_SECONDS} seconds (10 years)"


def validate_name(name: str) -> str:
    problem = name_problem(name)
    if problem:
        raise InvalidArgument(problem)
    return name


def validate_lifetime(expires_in_seconds: int) -> int:
    problem = lifetime_problem(expires_in_seconds)
    if problem:
        raise InvalidArgument(problem)
    return expires_in_seconds
