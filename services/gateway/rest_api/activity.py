"""`GET /api/v2/users/me/activity` (SPEC 2.8): the user's own recent audit events.

The vault's `AuditService.ListAuditEvents` (the gateway's right `manage` covers it) for the
admitted principal's user, never a user named by the request. Events name keys, never values:
the vault records no value in the first place. Newest first; `before_id` pages back.
"""

from __future__ import annotations

import re
from typing import Any

from aicreds.vault.v1 import audit_pb2

from services.common.scopes import Scope
from services.gateway.clients import VaultClient
from services.gateway.endpoint_table import ApiCall, Endpoint, QueryParam, Reply
from services.gateway.errors import invalid_argument
from services.gateway.schemas import envelope, now_json, obj, timestamp_json

PATH = "/api/v2/users/me/activity"
SCOPE = Scope.CREDENTIALS_READ
DEFAULT_LIMIT = 50
MAX_LIMIT = 200
#: The vault's event ids are int64.
MAX_ID = 2**63 - 1
_DIGITS = re.compile(r"[0-9]{1,19}")

EVENT_SCHEMA = obj(
    {
        "id": {"type": "integer", "minimum": 1, "description": "increasing; pass as before_id"},
        "time": {"type": "string", "format": "date-time", "description": "UTC"},
        "action": {"type": "string", "description": "e.g. credentials.put, providers.create"},
        "keys": {
            "type": "array",
            "items": {"type": "string"},
            "description": "credential keys or other names involved; never values",
        },
        "outcome": {"type": "string", "description": "ok, or the error code"},
        "caller": {"type": "string", "description": "the service that acted, e.g. gateway"},
    },
    ["id", "time", "action", "keys", "outcome", "caller"],
)


def _int_param(call: ApiCall, name: str, *, default: int, minimum: int, maximum: int) -> int:
    raw = call.request.query_params.get(name)
    if raw is None:
        return default
    if not _DIGITS.fullmatch(raw) or not minimum <= int(raw) <= maximum:
        raise invalid_argument(
            f"query parameter '{name}' must be an integer from {minimum} to {maximum}"
        )
    return int(raw)


def event_json(event: audit_pb2.AuditEvent) -> dict[str, Any]:
    return {
        "id": int(event.id),
        "time": timestamp_json(event, "time") or now_json(),
        "action": event.action,
        "keys": list(event.keys),
        "outcome": event.outcome,
        "caller": event.caller,
    }


def endpoints(vault: VaultClient) -> list[Endpoint]:
    """The activity list, read from `vault`'s audit log."""

    async def list_activity(call: ApiCall) -> Reply:
        limit = _int_param(call, "limit", default=DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT)
        before_id = _int_param(call, "before_id", default=0, minimum=1, maximum=MAX_ID)
        events = await vault.list_audit_events(call.user_id, limit=limit, before_id=before_id)
        return Reply({"events": [event_json(event) for event in events]})

    return [
        Endpoint(
            "GET",
            PATH,
            list_activity,
            "List the user's recent activity",
            "activity",
            envelope(obj({"events": {"type": "array", "items": EVENT_SCHEMA}}, ["events"])),
            scope=SCOPE,
            query=(
                QueryParam(
                    "limit",
                    {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                    f"at most this many events (default {DEFAULT_LIMIT})",
                ),
                QueryParam(
                    "before_id",
                    {"type": "integer", "minimum": 1, "maximum": MAX_ID},
                    "only events with a lower id: the last id of the previous page",
                ),
            ),
        )
    ]
