"""What a credential key and a credential value may be (SPEC 2.2). Pure: no I/O, no grpc.

The one home of the rule for the vault (which enforces it before anything is written) and the
gateway (which checks REST bodies before calling the vault, and documents the rule in its
OpenAPI schemas).

- **Keys**: 1-128 characters of `A-Z a-z 0-9 _ . -`, case-sensitive, not made only of dots:
  `.` and `..` cannot be addressed as `/ai-credentials/{key}` (HTTP clients and proxies
  normalise dot segments away).
- **Values**: non-empty, at most 16 KiB, and a legal HTTP header value: printable ASCII, space and
  tab only, and no space or tab first or last (HTTP strips or refuses such whitespace around a
  field value, so the value would never reach an upstream as stored). A legal value is ASCII,
  so its length in characters is its size in bytes; the character check comes first, so nothing
  is ever encoded (a lone surrogate from JSON cannot fail an encode) and every value the rule
  refuses is refused the same way.

Each check comes as `*_problem(...)`, the public message or None (for callers with their own
error type, such as the gateway's `ApiError`), and as `validate_*(...)`, which raises
`InvalidArgument` with that message. A message names the key, shortened and escaped by
`describe`, and never holds the value: a value is a secret.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from services.common.errors import InvalidArgument

MAX_KEY_LENGTH = 128
KEY_CHARACTERS = r"A-Za-z0-9_.\-"
KEY_PATTERN = re.compile(rf"(?!\.+(?![{KEY_CHARACTERS}]))[{KEY_CHARACTERS}]{{1,{MAX_KEY_LENGTH}}}")
"""A whole credential key (use `fullmatch`). The lookahead refuses a run of dots that is the
whole key, also inside a placeholder (`{{credential:..}}`), which reuses this pattern."""
KEY_JSON_PATTERN = f"^{KEY_PATTERN.pattern}$"
"""`KEY_PATTERN` as a JSON-schema `pattern` (anchored)."""

MAX_VALUE_BYTES = 16 * 1024
HEADER_VALUE_PATTERN = re.compile(r"[\t\x20-\x7e]*")
"""A legal HTTP header value, possibly empty (use `fullmatch`)."""
VALUE_PATTERN = re.compile(r"[\x21-\x7e](?:[\t\x20-\x7e]*[\x21-\x7e])?")
"""A credential value: a non-empty header value with no space or tab first or last (use
`fullmatch`)."""
VALUE_JSON_PATTERN = f"^{VALUE_PATTERN.pattern}$"
"""A credential value as a JSON-schema `pattern`."""

DESCRIBE_LIMIT = 64


def describe(name: str, limit: int = DESCRIBE_LIMIT) -> str:
    """A client-supplied name (key, header, model) for an error message: repr'd, so control
    characters are escaped, and shortened to `limit` characters. Never pass a value here."""
    if len(name) > limit:
        return repr(name[:limit]) + "..."
    return repr(name)


def is_valid_key(key: str) -> bool:
    return KEY_PATTERN.fullmatch(key) is not None


def is_header_value(value: str) -> bool:
    """A legal HTTP header value: printable ASCII, space and tab only (may be empty)."""
    return HEADER_VALUE_PATTERN.fullmatch(value) is not None


def key_problem(key: str) -> str | None:
    """Why `key` is not a credential key, or None."""
    if is_valid_key(key):
        return None
    if key and not key.strip("."):
        return f"credential key {describe(key)} is invalid: a key is not made only of dots"
    # The web UI repeats this wording for the keys it checks itself (credentials.js).
    return f"credential key {describe(key)} is invalid: use 1-128 characters of A-Z a-z 0-9 _ . -"


def value_problem(key: str, value: object) -> str | None:
    """Why `value` cannot be the value of credential `key`, or None. Names the key only."""
    if not isinstance(value, str):
        return f"value of credential {describe(key)} must be a string"
    if not value:
        return f"value of credential {describe(key)} is empty"
    if not is_header_value(value):
        return (
            f"value of credential {describe(key)} is not a legal HTTP header value: use "
            "printable ASCII, space and tab only (no CR, LF, NUL or other control characters)"
        )
    if len(value) > MAX_VALUE_BYTES:
        return f"value of credential {describe(key)} is longer than 16 KiB"
    if not VALUE_PATTERN.fullmatch(value):
        return (
            f"value of credential {describe(key)} starts or ends with a space or tab; HTTP "
            "would not send it as stored"
        )
    return None


def credentials_problem(credentials: Mapping[str, object]) -> str | None:
    """The first problem of a whole map, keys in sorted order (so the answer is stable)."""
    for key in sorted(credentials):
        problem = key_problem(key) or value_problem(key, credentials[key])
        if problem:
            return problem
    return None


def validate_key(key: str) -> str:
    """`key`, or InvalidArgument naming it."""
    problem = key_problem(key)
    if problem:
        raise InvalidArgument(problem)
    return key


def validate_value(key: str, value: str) -> str:
    """`value`, or InvalidArgument naming `key` (never the value)."""
    problem = value_problem(key, value)
    if problem:
        raise InvalidArgument(problem)
    return value


def validate_credentials(credentials: Mapping[str, str]) -> dict[str, str]:
    """A copy of the map, or InvalidArgument for its first problem (`credentials_problem`)."""
    problem = credentials_problem(credentials)
    if problem:
        raise InvalidArgument(problem)
    return dict(credentials)
