"""Input rules for credentials (SPEC 2.2) and user ids.

Every error names the offending key (shortened when long) and never the value. Validation
happens before anything is written, so an invalid request changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from services.common.errors import InvalidArgument

KEY_PATTERN = re.compile(r"[A-Za-z0-9_.\-]{1,128}")
MAX_VALUE_BYTES = 16 * 1024
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*")
_USER_ID = re.compile(r"[\x21-\x7e]{1,256}")


def describe(name: str, limit: int = 64) -> str:
    """A name for an error message: repr'd, shortened to `limit` characters."""
    if len(name) > limit:
        return repr(name[:limit]) + "..."
    return repr(name)


def validate_user_id(user_id: str) -> str:
    if not _USER_ID.fullmatch(user_id):
        raise InvalidArgument(
            "user_id is required: 1-256 printable ASCII characters without spaces"
        )
    return user_id


def validate_key(key: str) -> str:
    if not KEY_PATTERN.fullmatch(key):
        raise InvalidArgument(
            f"credential key {describe(key)} is invalid: use 1-128 characters of A-Z a-z 0-9 _ . -"
        )
    return key


def is_header_value(value: str) -> bool:
    """A legal HTTP header value: printable ASCII, space and tab only."""
    return _HEADER_VALUE.fullmatch(value) is not None


def validate_value(key: str, value: str) -> str:
    if not value:
        raise InvalidArgument(f"value of credential {describe(key)} is empty")
    if len(value.encode("utf-8")) > MAX_VALUE_BYTES:
        raise InvalidArgument(f"value of credential {describe(key)} is longer than 16 KiB")
    if not is_header_value(value):
        raise InvalidArgument(
            f"value of credential {describe(key)} is not a legal HTTP header value: use "
            "printable ASCII, space and tab only (no CR, LF, NUL or other control characters)"
        )
    return value


def validate_credentials(credentials: Mapping[str, str]) -> dict[str, str]:
    """Check every pair of a map; the first problem (in key order) is raised."""
    for key in sorted(credentials):
        validate_key(key)
        validate_value(key, credentials[key])
    return dict(credentials)
