"""`/api/v2/users/me/api-tokens` (SPEC 2.4): the user's API tokens.

A token may only hand out scopes it holds itself: creating a token cannot widen access. The
name and lifetime rules are `services.common.token_rules`, the scopes `services.common.scopes`.
Revoking drops this replica's cached authentication at once; other replicas follow within
`GATEWAY_AUTH_CACHE_TTL`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aicreds.vault.v1 import auth_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from services.common.scopes import ALL_SCOPES, Scope
from services.common.token_rules import (
    MAX_LIFETIME_SECONDS,
    MAX_TOKEN_NAME,
    NAME_JSON_PATTERN,
    name_problem,
)
from services.gateway.auth import Authenticator
from services.gateway.clients import VaultClient
from services.gateway.endpoint_table import ApiCall, Endpoint, Reply
from services.gateway.errors import ApiError, invalid_argument
from services.gateway.schemas import envelope, obj, ref
from services.gateway.validation import (
    optional_positive_int,
    parse_scopes,
    require_object,
    required_string,
)

BASE = "/api/v2/users/me/api-tokens"


def timestamp_json(message: Any, field: str) -> str | None:
    """An RFC 3339 UTC time for a set Timestamp field, None when unset."""
    if not message.HasField(field):
        return None
    stamp: Timestamp = getattr(message, field)
    moment = datetime.fromtimestamp(stamp.seconds + stamp.nanos / 1e9, tz=UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def token_json(info: auth_pb2.TokenInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "name": info.name,
        "prefix": info.prefix[:8],
        "scopes": list(info.scopes),
        "created_at": timestamp_json(info, "created_at"),
        "last_used_at": timestamp_json(info, "last_used_at"),
        "expires_at": timestamp_json(info, "expires_at"),
        "revoked_at": timestamp_json(info, "revoked_at"),
    }


_TOKEN = envelope(ref("TokenInfo"))
_CREATED = envelope(ref("CreatedToken"))


def endpoints(vault: VaultClient, authenticator: Authenticator) -> list[Endpoint]:
    """The token operations: stored by `vault`; a revoked token leaves `authenticator`'s cache."""

    async def list_tokens(call: ApiCall) -> Reply:
        tokens = await vault.list_tokens(call.user_id)
        return Reply({"tokens": [token_json(t) for t in tokens]})

    async def create_token(call: ApiCall) -> Reply:
        body = require_object(await call.json())
        name = required_string(body, "name", max_len=MAX_TOKEN_NAME)
        problem = name_problem(name)
        if problem:
            raise invalid_argument(problem)
        requested = parse_scopes(body)
        held = call.principal.scopes
        if requested is None:
            scopes = [scope for scope in ALL_SCOPES if scope in held]
        else:
            beyond = [scope for scope in requested if scope not in held]
            if beyond:
                raise ApiError(
                    403, "forbidden", f"a token cannot grant the scope '{beyond[0]}' it lacks"
                )
            scopes = requested
        expires_in = optional_positive_int(body, "expires_in", maximum=MAX_LIFETIME_SECONDS) or 0
        created = await vault.create_token(call.user_id, name, scopes, expires_in)
        return Reply({"token": created.token, **token_json(created.info)}, status=201)

    async def revoke_token(call: ApiCall) -> Reply:
        token_id = call.path_param("id")
        info = await vault.revoke_token(call.user_id, token_id)
        authenticator.forget_token(info.id or token_id)
        return Reply(token_json(info))

    return [
        Endpoint(
            "GET",
            BASE,
            list_tokens,
            "List API tokens",
            "tokens",
            envelope(obj({"tokens": {"type": "array", "items": ref("TokenInfo")}}, ["tokens"])),
            scope=Scope.TOKENS_MANAGE,
        ),
        Endpoint(
            "POST",
            BASE,
            create_token,
            "Create an API token",
            "tokens",
            _CREATED,
            scope=Scope.TOKENS_MANAGE,
            success_status=201,
            request_schema=obj(
                {
                    "name": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": MAX_TOKEN_NAME,
                        "pattern": NAME_JSON_PATTERN,
                    },
                    "scopes": {
                        "type": "array",
                        "items": {"type": "string", "enum": list(ALL_SCOPES)},
                        "minItems": 1,
                        "description": "default: every scope the creating token holds",
                    },
                    "expires_in": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": MAX_LIFETIME_SECONDS,
                        "description": "lifetime in seconds; omit for a token that never expires",
                    },
                },
                ["name"],
            ),
            errors={403: "forbidden"},
        ),
        Endpoint(
            "DELETE",
            BASE + "/{id}",
            revoke_token,
            "Revoke an API token",
            "tokens",
            _TOKEN,
            scope=Scope.TOKENS_MANAGE,
            path_params={"id": {"type": "string", "minLength": 1}},
            errors={404: "token_not_found"},
        ),
    ]
