"""Reading the `audit_events` table (written by `database.insert_audit`)."""

from __future__ import annotations

import json

from services.vault.audit_log import AuditEvent
from services.vault.store.database import Database, parse_utc_text


class SqlAuditReader:
    """`AuditReader` on the vault's database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def __repr__(self) -> str:
        return f"SqlAuditReader({self.db!r})"

    async def list_audit_events(
        self, user_id: str, *, limit: int, before_id: int | None
    ) -> list[AuditEvent]:
        rows = await self.db.fetch_all(
            "SELECT id, time, caller, user_id, action, keys, outcome FROM audit_events"
            " WHERE user_id = ? AND id < ? ORDER BY id DESC LIMIT ?",
            (user_id, before_id if before_id is not None else 2**63 - 1, limit),
        )
        return [
            AuditEvent(
                id=int(row[0]),
                time=parse_utc_text(str(row[1])),
                caller=str(row[2]),
                user_id=str(row[3]),
                action=str(row[4]),
                keys=tuple(json.loads(str(row[5]))),
                outcome=str(row[6]),
            )
            for row in rows
        ]
