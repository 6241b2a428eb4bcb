"""The `usage_daily` table (migration 8): a user's token totals per day, provider and model.

Counts are added with one upsert per (provider, model) in a transaction under the user's lock,
so concurrent reports (from several routers, on several vault replicas) add up exactly, and the
row limit per day is checked against what the transaction sees. The commit does not wait for a
disk sync (`writing(synced=False)`, docs/architecture.md#audit-durability).
"""

from __future__ import annotations

from collections.abc import Sequence

from services.common.usage_rules import OVERFLOW
from services.vault.store.database import Database
from services.vault.usage import UsageCounts, UsageRow, UsageStore

_ADD = (
    "INSERT INTO usage_daily (user_id, day, provider, model, input_tokens, output_tokens, calls)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (user_id, day, provider, model) DO UPDATE SET"
    " input_tokens = usage_daily.input_tokens + excluded.input_tokens,"
    " output_tokens = usage_daily.output_tokens + excluded.output_tokens,"
    " calls = usage_daily.calls + excluded.calls"
)
_OVERFLOW_ROW = (OVERFLOW, OVERFLOW)


class SqlUsageStore:
    """`UsageStore` on the vault's database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def __repr__(self) -> str:
        return f"SqlUsageStore({self.db!r})"

    async def add_usage(
        self, user_id: str, day: str, counts: Sequence[UsageCounts], *, max_rows: int
    ) -> None:
        # Counts are best effort (router/usage_reporter.py): synced within the audit rows'
        # bound, so that a disk another process keeps busy holds up no Resolve behind them.
        async with self.db.writing(lock=user_id, synced=False) as tx:
            rows = await tx.fetch_all(
                "SELECT provider, model FROM usage_daily WHERE user_id = ? AND day = ?",
                (user_id, day),
            )
            present = {(str(row[0]), str(row[1])) for row in rows}
            for c in counts:
                pair = (c.provider, c.model)
                if pair not in present:
                    if len(present - {_OVERFLOW_ROW}) >= max_rows:
                        pair = _OVERFLOW_ROW
                    present.add(pair)
                await tx.execute(
                    _ADD,
                    (user_id, day, *pair, c.input_tokens, c.output_tokens, c.calls),
                )

    async def get_usage(self, user_id: str, first_day: str, last_day: str) -> list[UsageRow]:
        rows = await self.db.fetch_all(
            "SELECT day, provider, model, input_tokens, output_tokens, calls FROM usage_daily"
            " WHERE user_id = ? AND day >= ? AND day <= ? ORDER BY day, provider, model",
            (user_id, first_day, last_day),
        )
        return [
            UsageRow(str(r[0]), str(r[1]), str(r[2]), int(r[3]), int(r[4]), int(r[5])) for r in rows
        ]


def _implements(store: SqlUsageStore) -> UsageStore:
    """Lets mypy check that this backend implements the whole interface."""
    return store
