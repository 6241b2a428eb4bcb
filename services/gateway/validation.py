"""Checks of request bodies and path parameters (SPEC 2.2-2.4), before anything is sent on.

Every check raises `ApiError` 400 `invalid_argument` whose message names the offending key or
field but never the value: a value may be a secret. The rules the vault shares live in
`services.common` (`credential_rules`, `scopes`); this module reads them out of REST JSON, and
shows client text in messages as they do (`credential_rules.describe`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.common.credential_rules import key_problem, value_problem
from services.common.scopes import ALL_SCOPES, scopes_problem
from services.gateway.errors import invalid_argument


def check_credential_key(key: str) -> str:
    """`key`, or 400 naming it (`credential_rules.key_problem`)."""
    problem = key_problem(key)
    if problem:
        raise invalid_argument(problem)
    return key


def check_credential_value(key: str, value: object) -> str:
    """`value` as a string, or 400 naming `key` (`credential_rules.value_problem`)."""
    problem = value_problem(key, value)
    if problem:
        raise invalid_argument(problem)
    assert isinstance(value, str)  # value_problem refuses anything else
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
    """The optional `scopes` of a token request: known scope names (`services.common.scopes`),
    without duplicates, in canonical order.

    REST's own rules on top: `scopes` is a list of strings, and an explicit `[]` is refused
    (the vault reads an empty list as "every scope"; a REST client omits the field for that).
    """
    if obj.get("scopes") is None:
        return None
    scopes = string_list(obj, "scopes")
    problem = scopes_problem(scopes)
    if problem:
        raise invalid_argument(problem)
    if not scopes:
        raise invalid_argument("'scopes' must not be empty; omit it to grant every scope")
    return [scope for scope in ALL_SCOPES if scope in scopes]


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
