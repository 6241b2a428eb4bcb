"""`/api/v2/users/me/api-tokens` (SPEC 2.4): the user's API tokens.

A token is minted on behalf of the principal that asks: the gateway names its token (and, for a
cookie session, the session) as the parent, and the vault — the one home of the rule — grants
no scope the parent lacks (403 `forbidden`), caps the expiry at the parent's, and revokes the
child with the parent. The name and lifetime rules are `services.common.token_rules`, the
scopes `services.common.scopes`. Revoking drops the cached authentication of the user's tokens
(the revoked token's descendants included) at once, on this replica and, with a revocation feed,
on the others (`revocations.py`); without one they follow within `GATEWAY_AUTH_CACHE_TTL`.
"""

from __future__ import annotations

from typing import Any

from aicreds.vault.v1 import auth_pb2

from services.common.scopes import ALL_SCOPES, Scope
from services.common.token_rules import (
    MAX_LIFETIME_SECONDS,
    MAX_TOKEN_NAME,
    NAME_JSON_PATTERN,
    name_problem,
)
from services.gateway.auth import AuthMethod
from services.gateway.clients import VaultClient
from services.gateway.endpoint_table import ApiCall, Endpoint, Reply
from services.gateway.errors import invalid_argument
from services.gateway.revocations import Revocations
from services.gateway.schemas import envelope, obj, ref, timestamp_json
from services.gateway.validation import (
    optional_positive_int,
    parse_scopes,
    require_object,
    required_string,
)

BASE = "/api/v2/users/me/api-tokens"


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


def endpoints(vault: VaultClient, revocations: Revocations) -> list[Endpoint]:
    """The token operations: stored by `vault`; a revoked token goes to `revocations`."""

    async def list_tokens(call: ApiCall) -> Reply:
        tokens = await vault.list_tokens(call.user_id)
        return Reply({"tokens": [token_json(t) for t in tokens]})

    async def create_token(call: ApiCall) -> Reply:
        body = require_object(await call.json())
        name = required_string(body, "name", max_len=MAX_TOKEN_NAME)
        problem = name_problem(name)
        if problem:
            raise invalid_argument(problem)
        # None requested: the vault grants all of the parent's scopes.
        scopes = parse_scopes(body) or []
        expires_in = optional_positive_int(body, "expires_in", maximum=MAX_LIFETIME_SECONDS) or 0
        principal = call.principal
        by_session = principal.method is AuthMethod.SESSION
        created = await vault.create_token(
            call.user_id,
            name,
            scopes,
            expires_in,
            parent_token_id=principal.token_id,
            parent_session_id=principal.session_id if by_session else "",
        )
        return Reply({"token": created.token, **token_json(created.info)}, status=201)

    async def revoke_token(call: ApiCall) -> Reply:
        token_id = call.path_param("id")
        info = await vault.revoke_token(call.user_id, token_id)
        await revocations.token_revoked(call.user_id)
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
                        "description": "default: every scope the creating token holds; a scope"
                        " it lacks is 403 forbidden",
                    },
                    "expires_in": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": MAX_LIFETIME_SECONDS,
                        "description": "lifetime in seconds, capped at the creating token's (or"
                        " session's) expiry; omit for the creator's expiry (never, if it has"
                        " none)",
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
