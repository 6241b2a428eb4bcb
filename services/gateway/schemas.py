"""JSON schemas of the REST v2 bodies, shared by the routes and the OpenAPI document.

The patterns, limits and enums are the rules' own (`services.common.credential_rules`,
`provider_rules`, `scopes`), so the document cannot drift from what is enforced.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from services.common.credential_rules import (
    HEADER_VALUE_PATTERN,
    KEY_JSON_PATTERN,
    MAX_KEY_LENGTH,
    MAX_VALUE_BYTES,
    VALUE_JSON_PATTERN,
)
from services.common.provider_rules import (
    HEADER_NAME,
    MAX_BASE_URL,
    MODEL,
    ON_MISSING_CREDENTIAL,
    PROVIDER_KINDS,
    PROVIDER_NAME_JSON_PATTERN,
)
from services.common.scopes import ALL_SCOPES

JsonSchema = dict[str, Any]


def ref(name: str) -> JsonSchema:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(properties: dict[str, JsonSchema], required: list[str] | None = None) -> JsonSchema:
    schema: JsonSchema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    schema["additionalProperties"] = False
    return schema


CREDENTIAL_KEY: JsonSchema = {
    "type": "string",
    "pattern": KEY_JSON_PATTERN,
    "minLength": 1,
    "maxLength": MAX_KEY_LENGTH,
    "description": "1-128 characters of A-Z a-z 0-9 _ . - (case-sensitive), not only dots",
}
CREDENTIAL_VALUE: JsonSchema = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_VALUE_BYTES,
    "pattern": VALUE_JSON_PATTERN,
    "description": (
        "a legal HTTP header value: printable ASCII, space and tab, no space or tab first or last"
    ),
}
PROVIDER_NAME: JsonSchema = {"type": "string", "pattern": PROVIDER_NAME_JSON_PATTERN}
PROVIDER_KIND: JsonSchema = {"type": "string", "enum": list(PROVIDER_KINDS)}
ON_MISSING: JsonSchema = {"type": "string", "enum": list(ON_MISSING_CREDENTIAL)}
TIMESTAMP: JsonSchema = {"type": ["string", "null"], "format": "date-time"}


def timestamp_json(message: Any, field: str) -> str | None:
    """A set protobuf Timestamp field as RFC 3339 UTC with whole seconds
    (`2026-11-27T12:00:00Z`), None when unset: how every REST body shows a time."""
    if not message.HasField(field):
        return None
    stamp = getattr(message, field)
    moment = datetime.fromtimestamp(stamp.seconds + stamp.nanos / 1e9, tz=UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def now_json() -> str:
    """The current time as `timestamp_json` shows a time."""
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


COMPONENTS: dict[str, JsonSchema] = {
    "Error": obj(
        {
            "error": obj(
                {"code": {"type": "string"}, "message": {"type": "string"}},
                ["code", "message"],
            )
        },
        ["error"],
    ),
    "CredentialMap": {
        "type": "object",
        "propertyNames": CREDENTIAL_KEY,
        "additionalProperties": {"type": "string"},
        "description": "credential key -> value (masked with ?masked=true)",
    },
    "CredentialValue": CREDENTIAL_VALUE,
    "CredentialMapInput": {
        "type": "object",
        "propertyNames": CREDENTIAL_KEY,
        "additionalProperties": CREDENTIAL_VALUE,
    },
    "Provider": obj(
        {
            "name": PROVIDER_NAME,
            "kind": PROVIDER_KIND,
            "base_url": {"type": "string", "description": "absolute http(s) URL"},
            "headers": {
                "type": "object",
                "additionalProperties": {"type": "array", "items": {"type": "string"}},
                "description": "header name -> values; sensitive values are MASKED",
            },
            "models": {"type": "array", "items": {"type": "string"}},
            "on_missing_credential": ON_MISSING,
        },
        ["name", "kind", "base_url", "headers", "models", "on_missing_credential"],
    ),
    "ProviderCreate": obj(
        {
            "name": PROVIDER_NAME,
            "kind": PROVIDER_KIND,
            "base_url": {
                "type": "string",
                "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://[^\\s]+$",
                "maxLength": MAX_BASE_URL,
                "description": "absolute http(s) URL with a host, no user:password@ and no "
                "#fragment",
            },
            "headers": {
                "type": "object",
                "propertyNames": {"pattern": f"^{HEADER_NAME.pattern}$"},
                "additionalProperties": {
                    "type": "array",
                    "items": {"type": "string", "pattern": f"^{HEADER_VALUE_PATTERN.pattern}$"},
                },
                "description": "header name (an HTTP token) -> values, which may hold "
                "{{credential:KEY}} placeholders",
            },
            "models": {
                "type": "array",
                "items": {"type": "string", "pattern": f"^{MODEL.pattern}$"},
            },
            "on_missing_credential": ON_MISSING,
        },
        ["name", "kind", "base_url"],
    ),
    "ProviderReply": obj(
        {"provider": ref("Provider"), "warnings": {"type": "array", "items": {"type": "string"}}},
        ["provider", "warnings"],
    ),
    "TokenInfo": obj(
        {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "prefix": {"type": "string", "maxLength": 8},
            "scopes": {"type": "array", "items": {"type": "string", "enum": list(ALL_SCOPES)}},
            "created_at": TIMESTAMP,
            "last_used_at": TIMESTAMP,
            "expires_at": TIMESTAMP,
            "revoked_at": TIMESTAMP,
        },
        [
            "id",
            "name",
            "prefix",
            "scopes",
            "created_at",
            "last_used_at",
            "expires_at",
            "revoked_at",
        ],
    ),
}


COMPONENTS["ProviderUpdate"] = {
    **COMPONENTS["ProviderCreate"],
    "required": ["kind", "base_url"],
    "description": "the new configuration; `name`, if given, must equal the path's",
}


COMPONENTS["CreatedToken"] = obj(
    {
        "token": {"type": "string", "description": "the token, shown only this once"},
        **COMPONENTS["TokenInfo"]["properties"],
    },
    ["token", *COMPONENTS["TokenInfo"]["required"]],
)


def envelope(inner: JsonSchema) -> JsonSchema:
    """`{"response": inner}`."""
    return obj({"response": inner}, ["response"])
