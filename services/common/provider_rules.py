"""What an AI provider's configuration may be (SPEC 2.3). Pure: no I/O, no grpc.

The one home of the provider rules for the vault (which enforces them before anything is
written) and the gateway (which converts REST JSON and documents the rules in its OpenAPI
schemas): the name, the kinds, the on-missing-credential modes, the base URL, the header names
and values, the models, and their limits. `services.common.provider_proto` maps the two enums to
and from their protobuf numbers.

As in `services.common.credential_rules`, each check comes as `*_problem(...)` (the public
message or None) and `validate_*(...)` (raises `InvalidArgument`). Messages name a field, a
header or a model, never a header value: it may hold a literal secret.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from enum import StrEnum
from urllib.parse import urlsplit

from services.common.credential_rules import MAX_VALUE_BYTES, describe, is_header_value
from services.common.errors import InvalidArgument


class ProviderKind(StrEnum):
    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    CUSTOM = "custom"


class OnMissingCredential(StrEnum):
    """What a call does when a referenced credential is missing (SPEC 3.2)."""

    WARN = "warn"
    ERROR = "error"


PROVIDER_KINDS: tuple[str, ...] = tuple(kind.value for kind in ProviderKind)
ON_MISSING_CREDENTIAL: tuple[str, ...] = tuple(mode.value for mode in OnMissingCredential)
DEFAULT_ON_MISSING_CREDENTIAL = OnMissingCredential.WARN.value

PROVIDER_NAME = re.compile(r"[a-z0-9_-]{1,64}")
"""A whole provider name (use `fullmatch`)."""
PROVIDER_NAME_JSON_PATTERN = f"^{PROVIDER_NAME.pattern}$"

HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,256}")
"""A configured header name: an HTTP token (RFC 9110 5.6.2) of at most 256 characters."""
#: The router sets these itself; a configured value would break the proxied request.
RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})
MODEL = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]{0,254}[\x21-\x7e])?")
"""A model name: 1-256 printable ASCII characters, no leading or trailing space."""

MAX_BASE_URL = 2048
MAX_HEADERS = 100
MAX_HEADER_VALUES = 32
MAX_MODELS = 1000


def provider_name_problem(name: str) -> str | None:
    if PROVIDER_NAME.fullmatch(name):
        return None
    return f"provider name {describe(name)} is invalid: use 1-64 characters of a-z 0-9 _ -"


def kind_problem(kind: str) -> str | None:
    return None if kind in PROVIDER_KINDS else "kind must be openai, anthropic or custom"


def on_missing_problem(mode: str) -> str | None:
    if mode in ON_MISSING_CREDENTIAL:
        return None
    return "on_missing_credential must be warn or error"


def base_url_problem(base_url: str) -> str | None:
    """An absolute http(s) URL with a host, no credentials in it, no query and no fragment.

    No query at all, rather than no credential-like parameter: a base URL is shown in clear in
    every provider response and screen, while a query's secrets hide under any name
    (`?key=`, `?sig=`, `?code=`, `?x=`), so no list of names makes one safe to show. A query a
    provider needs on every call (Azure's `api-version`) is sent by the caller, whose query
    the router appends to the base URL; a secret one belongs in a header placeholder.
    """
    problem = _base_url_problem(base_url)
    return f"base_url is invalid: {problem}" if problem else None


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
    if parts.query or "?" in base_url:
        return (
            "it must not have a ?query (a query may hold a secret and a base URL is shown in "
            "clear); put secrets in headers as {{credential:...}}, send other parameters with "
            "each call"
        )
    return None


def is_valid_model(model: str) -> bool:
    return MODEL.fullmatch(model) is not None


def model_problem(model: str) -> str | None:
    if is_valid_model(model):
        return None
    return (
        f"model {describe(model)} is invalid: 1-256 printable ASCII characters, "
        "no leading or trailing spaces"
    )


def models_problem(models: Sequence[str]) -> str | None:
    if len(models) > MAX_MODELS:
        return f"a provider lists at most {MAX_MODELS} models"
    seen: set[str] = set()
    for model in models:
        problem = model_problem(model)
        if problem:
            return problem
        if model in seen:
            return f"model {describe(model)} is listed twice"
        seen.add(model)
    return None


def headers_problem(headers: Mapping[str, Sequence[str]]) -> str | None:
    """Header names are HTTP tokens, unique case-insensitively, not set by the router; each has
    1-32 values, every one a legal header value of at most 16 KiB."""
    if len(headers) > MAX_HEADERS:
        return f"a provider has at most {MAX_HEADERS} headers"
    seen: dict[str, str] = {}
    for name in sorted(headers):
        if not HEADER_NAME.fullmatch(name):
            return f"header name {describe(name)} is not a valid HTTP token"
        lowered = name.lower()
        if lowered in RESERVED_HEADERS:
            return f"header {describe(name)} is set by the router, not configured"
        if lowered in seen:
            return f"headers {describe(seen[lowered])} and {describe(name)} differ only in case"
        seen[lowered] = name
        values = headers[name]
        if not values:
            return f"header {describe(name)} has no values"
        if len(values) > MAX_HEADER_VALUES:
            return f"header {describe(name)} has more than {MAX_HEADER_VALUES} values"
        for index, value in enumerate(values, start=1):
            if not is_header_value(value) or len(value) > MAX_VALUE_BYTES:
                return (
                    f"value {index} of header {describe(name)} is not a legal HTTP header value: "
                    "printable ASCII, space and tab only, at most 16 KiB"
                )
    return None


def _raise_if(problem: str | None) -> None:
    if problem:
        raise InvalidArgument(problem)


def validate_provider_name(name: str) -> str:
    _raise_if(provider_name_problem(name))
    return name


def validate_kind(kind: str) -> str:
    _raise_if(kind_problem(kind))
    return kind


def validate_on_missing(mode: str) -> str:
    _raise_if(on_missing_problem(mode))
    return mode


def validate_base_url(base_url: str) -> str:
    _raise_if(base_url_problem(base_url))
    return base_url


def validate_model(model: str) -> str:
    _raise_if(model_problem(model))
    return model


def validate_models(models: Sequence[str]) -> tuple[str, ...]:
    _raise_if(models_problem(models))
    return tuple(models)


def validate_headers(headers: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    _raise_if(headers_problem(headers))
    return {name: list(values) for name, values in headers.items()}
