"""`GET /api/v2/users/me/usage` (issue 18): the user's own token usage per day, provider and model.

The vault's `UsageService.GetUsage` (the gateway's right `manage` covers it) for the admitted
principal's user, never a user named by the request. `from` and `to` are UTC days
(`YYYY-MM-DD`, both included); without `to` the range ends today, without `from` it covers the
30 days ending at `to`; at most 366 days (`services.common.usage_rules`, the vault's rule too).
The answer repeats the range, lists the rows by day, provider and model, and adds them up.

Scope `providers:read`: the rows name the user's providers and models and hold counts, nothing
about credentials.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aicreds.vault.v1 import usage_pb2

from services.common.errors import InvalidArgument
from services.common.scopes import Scope
from services.common.usage_rules import DEFAULT_USAGE_DAYS, MAX_USAGE_DAYS, day_range
from services.gateway.clients import VaultClient
from services.gateway.endpoint_table import ApiCall, Endpoint, QueryParam, Reply
from services.gateway.errors import invalid_argument
from services.gateway.schemas import envelope, obj

PATH = "/api/v2/users/me/usage"
SCOPE = Scope.PROVIDERS_READ

_COUNT = {"type": "integer", "minimum": 0}
_DAY = {"type": "string", "format": "date", "description": "UTC day, YYYY-MM-DD"}
_COUNTS = {
    "input_tokens": _COUNT | {"description": "input (prompt) tokens, cached ones included"},
    "output_tokens": _COUNT | {"description": "output (completion) tokens"},
    "calls": _COUNT | {"description": "answers that reported usage"},
}
ROW_SCHEMA = obj(
    {
        "day": _DAY,
        "provider": {"type": "string", "description": "the provider's name (or other)"},
        "model": {"type": "string", "description": "the model the calls asked for (or other)"},
        **_COUNTS,
    },
    ["day", "provider", "model", *_COUNTS],
)
USAGE_SCHEMA = obj(
    {
        "from": _DAY,
        "to": _DAY,
        "rows": {"type": "array", "items": ROW_SCHEMA},
        "totals": obj(dict(_COUNTS), list(_COUNTS)),
    },
    ["from", "to", "rows", "totals"],
)


def row_json(row: usage_pb2.UsageRow) -> dict[str, Any]:
    return {
        "day": row.day,
        "provider": row.provider,
        "model": row.model,
        "input_tokens": int(row.input_tokens),
        "output_tokens": int(row.output_tokens),
        "calls": int(row.calls),
    }


def endpoints(vault: VaultClient) -> list[Endpoint]:
    """The usage read, from `vault`'s daily totals."""

    async def get_usage(call: ApiCall) -> Reply:
        query = call.request.query_params
        try:
            span = day_range(
                query.get("from", ""), query.get("to", ""), today=datetime.now(UTC).date()
            )
        except InvalidArgument as err:
            raise invalid_argument(err.message) from None
        first, last = span.first.isoformat(), span.last.isoformat()
        rows = [row_json(row) for row in await vault.get_usage(call.user_id, first, last)]
        totals = {name: sum(row[name] for row in rows) for name in _COUNTS}
        return Reply({"from": first, "to": last, "rows": rows, "totals": totals})

    return [
        Endpoint(
            "GET",
            PATH,
            get_usage,
            "The user's token usage per day, provider and model",
            "usage",
            envelope(USAGE_SCHEMA),
            scope=SCOPE,
            query=(
                QueryParam(
                    "from", _DAY, f"the first day (default: {DEFAULT_USAGE_DAYS} days to `to`)"
                ),
                QueryParam(
                    "to", _DAY, f"the last day (default: today); at most {MAX_USAGE_DAYS} days"
                ),
            ),
        )
    ]
