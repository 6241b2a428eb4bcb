"""`POST /api/v2/users/me/ai-providers/{name}/test` (SPEC 2.8, the web UI's **Test**).

The router's `CheckProvider` sends the provider's model list request upstream with the user's
current credentials, through its egress policy, and answers an outcome; this module turns that
into REST JSON. The request carries nothing but the provider's name: nothing the user did not
already configure is sent, and nothing comes back but an outcome, a status and a sentence (never
the upstream's body). An unknown provider is the router's NOT_FOUND, mapped by `errors.py` to
404 `provider_not_found`. It needs only `providers:read`: it changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aicreds.router.v1 import router_pb2

from services.common.scopes import Scope
from services.gateway.clients import RouterClient
from services.gateway.endpoint_table import ApiCall, Endpoint, Reply, read_body
from services.gateway.errors import ApiError, invalid_argument
from services.gateway.schemas import PROVIDER_NAME, envelope, now_json, obj, timestamp_json

PATH = "/api/v2/users/me/ai-providers/{name}/test"
SCOPE = Scope.PROVIDERS_READ

OUTCOME_NAMES: Mapping[int, str] = {
    router_pb2.CHECK_OUTCOME_ACCEPTED: "accepted",
    router_pb2.CHECK_OUTCOME_KEY_REJECTED: "key_rejected",
    router_pb2.CHECK_OUTCOME_UNREACHABLE: "unreachable",
    router_pb2.CHECK_OUTCOME_REFUSED_BY_POLICY: "refused_by_policy",
    router_pb2.CHECK_OUTCOME_UPSTREAM_ERROR: "upstream_error",
    router_pb2.CHECK_OUTCOME_CREDENTIAL_MISSING: "credential_missing",
}

#: A body may be absent or `{}` (what the web UI sends); the test takes no parameters.
_MAX_BODY = 1024

RESULT_SCHEMA = obj(
    {
        "provider": PROVIDER_NAME,
        "outcome": {
            "type": "string",
            "enum": list(OUTCOME_NAMES.values()),
            "description": "accepted: 2xx; key_rejected: 401/403; unreachable: no answer; "
            "refused_by_policy: the egress policy refused the address, nothing sent; "
            "upstream_error: another status; credential_missing: a referenced credential is "
            "missing and on_missing_credential is error, nothing sent",
        },
        "status": {
            "type": "integer",
            "minimum": 0,
            "maximum": 599,
            "description": "the upstream's HTTP status; 0 when nothing answered",
        },
        "message": {"type": "string", "description": "names at most the host, status and keys"},
        "warnings": {"type": "array", "items": {"type": "string"}},
        "checked_at": {
            "type": "string",
            "format": "date-time",
            "description": "UTC, e.g. 2026-11-27T12:00:00Z",
        },
    },
    ["provider", "outcome", "status", "message", "warnings", "checked_at"],
)


def check_result(name: str, reply: router_pb2.CheckProviderResponse) -> dict[str, Any]:
    """The REST JSON of a check.

    Raises:
        ApiError: 500 if the router answered no known outcome (it never should).
    """
    outcome = OUTCOME_NAMES.get(reply.outcome)
    if outcome is None:
        raise ApiError(500, "internal", "the router answered no outcome")
    return {
        "provider": name,
        "outcome": outcome,
        "status": int(reply.status),
        "message": reply.message,
        "warnings": list(reply.warnings),
        "checked_at": timestamp_json(reply, "checked_at") or now_json(),
    }


async def _require_no_parameters(call: ApiCall) -> None:
    raw = await read_body(call.request, _MAX_BODY)
    if not raw.strip():
        return
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise invalid_argument("the request body is not valid JSON") from None
    if body != {}:
        raise invalid_argument("a test takes no parameters: send no body, or {}")


def endpoints(router: RouterClient) -> list[Endpoint]:
    """The provider test, answered by `router`."""

    async def test_provider(call: ApiCall) -> Reply:
        await _require_no_parameters(call)
        name = call.path_param("name")
        return Reply(check_result(name, await router.check_provider(call.user_id, name)))

    return [
        Endpoint(
            "POST",
            PATH,
            test_provider,
            "Test a provider",
            "providers",
            envelope(RESULT_SCHEMA),
            scope=SCOPE,
            path_params={"name": PROVIDER_NAME},
            errors={
                404: "provider_not_found",
                413: "payload_too_large: a body other than none or {}",
                503: "unavailable: the router (or the vault behind it) is unreachable",
                504: "deadline_exceeded: the router did not answer in time",
            },
        )
    ]
