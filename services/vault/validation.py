"""Input rules for credentials (SPEC 2.2), providers (SPEC 2.3) and user ids.

Every error names the offending key (shortened when long) and never the value. Validation
happens before anything is written, so an invalid request changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

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
    # Characters first: a legal value is ASCII, so its length in characters is its size in
    # bytes (and nothing is encoded that could fail, such as a lone surrogate).
    if not is_header_value(value):
        raise InvalidArgument(
            f"value of credential {describe(key)} is not a legal HTTP header value: use "
            "printable ASCII, space and tab only (no CR, LF, NUL or other control characters)"
        )
    if len(value) > MAX_VALUE_BYTES:
        raise InvalidArgument(f"value of credential {describe(key)} is longer than 16 KiB")
    return value


def validate_credentials(credentials: Mapping[str, str]) -> dict[str, str]:
    """Check every pair of a map; the first problem (in key order) is raised."""
    for key in sorted(credentials):
        validate_key(key)
        validate_value(key, credentials[key])
    return dict(credentials)


# -- providers (issue 3) ------------------------------------------------------------------------

PROVIDER_NAME = re.compile(r"[a-z0-9_-]{1,64}")
PROVIDER_KINDS = ("openai", "anthropic", "custom")
ON_MISSING_CREDENTIAL = ("warn", "error")
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,256}")
# The router sets these itself; a configured value would break the proxied request.
_RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})
_MODEL = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]{0,254}[\x21-\x7e])?")
MAX_BASE_URL = 2048
MAX_HEADERS = 100
MAX_HEADER_VALUES = 32
MAX_MODELS = 1000


def validate_provider_name(name: str) -> str:
    if not PROVIDER_NAME.fullmatch(name):
        raise InvalidArgument(
            f"provider name {describe(name)} is invalid: use 1-64 characters of a-z 0-9 _ -"
        )
    return name


def validate_base_url(base_url: str) -> str:
    """An absolute http(s) URL with a host, no credentials in it and no fragment."""
    problem = _base_url_problem(base_url)
    if problem:
        raise InvalidArgument(f"base_url is invalid: {problem}")
    return base_url


def _base_url_problem(base_url: str) -> str | None:
    if not base_url:
        return "it is required"
    if len(base_url) > MAX_BASE_URL:
        return "it is longer than 2048 characters"
    if not re.fullmatch(r"[\x21-\x7e]+", base_url):
        return "it must be printable ASCII without spaces"
    try:
        parts = urlsplit(base_url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return "it is not a URL"
    if parts.scheme not in ("http", "https"):
        return "the scheme must be http or https"
    if not parts.hostname:
        return "it needs a host"
    if "@" in parts.netloc:
        return "it must not hold user:password@; put credentials in headers"
    if parts.fragment or base_url.endswith("#"):
        return "it must not have a #fragment"
    return None


def validate_model(model: str) -> str:
    if not _MODEL.fullmatch(model):
        raise InvalidArgument(
            f"model {describe(model)} is invalid: 1-256 printable ASCII characters, "
            "no leading or trailing spaces"
        )
    return model


def validate_models(models: Sequence[str]) -> tuple[str, ...]:
    if len(models) > MAX_MODELS:
        raise InvalidArgument(f"a provider lists at most {MAX_MODELS} models")
    seen: set[str] = set()
    for model in models:
        validate_model(model)
        if model in seen:
            raise InvalidArgument(f"model {describe(model)} is listed twice")
        seen.add(model)
    return tuple(models)


def validate_headers(headers: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Header names are HTTP tokens, unique case-insensitively; values legal header values."""
    if len(headers) > MAX_HEADERS:
        raise InvalidArgument(f"a provider has at most {MAX_HEADERS} headers")
    seen: dict[str, str] = {}
    for name in sorted(headers):
        if not _HEADER_NAME.fullmatch(name):
            raise InvalidArgument(f"header name {describe(name)} is not a valid HTTP token")
        lowered = name.lower()
        if lowered in _RESERVED_HEADERS:
            raise InvalidArgument(f"header {describe(name)} is set by the router, not configured")
        if lowered in seen:
            raise InvalidArgument(
                f"headers {describe(seen[lowered])} and {describe(name)} differ only in case"
            )
        seen[lowered] = name
        values = headers[name]
        if not values:
            raise InvalidArgument(f"header {describe(name)} has no values")
        if len(values) > MAX_HEADER_VALUES:
            raise InvalidArgument(f"header {describe(name)} has more than 32 values")
        for index, value in enumerate(values, start=1):
            if not is_header_value(value) or len(value) > MAX_VALUE_BYTES:
                raise InvalidArgument(
                    f"value {index} of header {describe(name)} is not a legal HTTP header value: "
                    "printable ASCII, space and tab only, at most 16 KiB"
                )
    return {name: list(values) for name, values in headers.items()}
