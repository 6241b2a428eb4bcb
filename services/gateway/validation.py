"""Checks of request bodies and path parameters (SPEC 2.2-2.4), before anything is sent on.

Every check raises `ApiError` 400 `invalid_argument` whose message names the offending key or
field but never the value: a value may be a secret.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from services.gateway.errors import invalid_argument

KEY_PATTERN = r"^[A-Za-z0-9_.\-]{1,128}$"
MAX_VALUE_BYTES = 16 * 1024
_KEY_RE = re.compile(KEY_PATTERN)
# Printable ASCII, space and tab: what a header value may carry (values go into headers).
_VALUE_RE = re.compile(r"^[\t\x20-\x7e]+$")

ALL_SCOPES: tuple[str, ...] = (
    "credentials:read",
    "credentials:write",
    "providers:read",
    "providers:write",
    "llm:invoke",
    "tokens:manage",
)


def shown(key: str) -> str:
    """Client-chosen text (a key, a field or header name) as it may appear in an error message:
    printable ASCII (space included; anything else is `?`), at most 64 characters, then `...`.
    """
    safe = "".join(ch if " " <= ch < "\x7f" else "?" for ch in key[:64])
    return safe + ("..." if len(key) > 64 else "")


def check_credential_key(key: str) -> str:
    if not _KEY_RE.fullmatch(key):
        raise invalid_argument(
            f"invalid credential key {shown(key)!r}: use 1-128 characters of A-Z a-z 0-9 _ . -"
        )
    return key


def check_credential_value(key: str, value: object) -> str:
    if not isinstance(value, str):
        raise invalid_argument(f"the value of {shown(key)!r} must be a string")
    if value == "":
        raise invalid_argument(f"the value of {shown(key)!r} is empty")
    if len(value.encode("utf-8")) > MAX_VALUE_BYTES:
        raise invalid_argument(f"the value of {shown(key)!r} is longer than 16 KiB")
    if not _VALUE_RE.fullmatch(value):
        raise invalid_argument(
            f"the value of {shown(key)!r} is not a legal HTTP header value "
            "(printable ASCII, space and tab only)"
        )
    return value


def require_object(body: object) -> Mapping[str, Any]:
    if not isinstance(body, dict):
        raise invalid_argument("the request body must be a JSON object")
    return body


def parse_credential_map(body: object) -> dict[str, str]:
    """`{"credentials": {key: value, ...}}` -> the map; every pair checked."""
    obj = require_object(body)
    if "credentials" not in obj:
        raise invalid_argument("missing field 'credentials'")
    credentials = obj["credentials"]
    if not isinstance(credentials, dict):
        raise invalid_argument("'credentials' must be an object of key -> value")
    return {
        check_credential_key(key): check_credential_value(key, value)
        for key, value in credentials.items()
    }


def parse_credential_value(key: str, body: object) -> str:
    """`{"value": "..."}` -> the value, checked."""
    obj = require_object(body)
    if "value" not in obj:
        raise invalid_argument("missing field 'value'")
    return check_credential_value(key, obj["value"])


def optional_string(obj: Mapping[str, Any], field: str, *, max_len: int = 1024) -> str | None:
    value = obj.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid_argument(f"'{field}' must be a string")
    if len(value) > max_len:
        raise invalid_argument(f"'{field}' is longer than {max_len} characters")
    return value


def required_string(obj: Mapping[str, Any], field: str, *, max_len: int = 1024) -> str:
    value = optional_string(obj, field, max_len=max_len)
    if value is None:
        raise invalid_argument(f"missing field '{field}'")
    return value


def string_list(obj: Mapping[str, Any], field: str) -> list[str]:
    value = obj.get(field)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise invalid_argument(f"'{field}' must be a list of strings")
    return list(value)


def optional_positive_int(obj: Mapping[str, Any], field: str, *, maximum: int) -> int | None:
    value = obj.get(field)
    if value is None:
        return None
    # bool is an int in Python but not in JSON.
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid_argument(f"'{field}' must be an integer number of seconds")
    if not 1 <= value <= maximum:
        raise invalid_argument(f"'{field}' must be between 1 and {maximum}")
    return value


def parse_scopes(obj: Mapping[str, Any]) -> list[str] | None:
    """The optional `scopes` of a token request: known scope names, no duplicates."""
    if obj.get("scopes") is None:
        return None
    scopes = string_list(obj, "scopes")
    for scope in scopes:
        if scope not in ALL_SCOPES:
            raise invalid_argument(
                f"unknown scope {shown(scope)!r}; known scopes: {', '.join(ALL_SCOPES)}"
            )
    if not scopes:
        raise invalid_argument("'scopes' must not be empty; omit it to grant every scope")
    return sorted(set(scopes), key=ALL_SCOPES.index)


def parse_flag(raw: str | None, name: str) -> bool:
    """A boolean query parameter: absent, `true`/`false` (also `1`/`0`)."""
    if raw is None:
        return False
    lowered = raw.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise invalid_argument(f"query parameter '{name}' must be true or false")
