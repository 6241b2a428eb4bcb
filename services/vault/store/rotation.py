"""Storage side of master-key rotation: finding, re-wrapping and counting wrapped data keys."""

from __future__ import annotations

from collections.abc import Sequence

from services.vault.store import WrappedDataKey
from services.vault.store.database import Database, utc_text


class RewrapConflict(Exception):
    """A data key changed between reading and re-wrapping it; the batch was rolled back."""

    def __init__(self, user_id: str) -> None:
        super().__init__(f"the data key of user {user_id!r} changed during the rewrap")
        self.user_id = user_id


class SqlRotationStore:
    """`RotationStore` on the vault's database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def __repr__(self) -> str:
        return f"SqlRotationStore({self.db!r})"

    async def data_keys_not_under(self, kek_id: str, limit: int) -> list[WrappedDataKey]:
        rows = await self.db.fetch_all(
            "SELECT user_id, dek_id, kek_id, wrapped FROM data_keys WHERE kek_id != ?"
            " ORDER BY user_id LIMIT ?",
            (kek_id, limit),
        )
        return [WrappedDataKey(str(r[0]), str(r[1]), str(r[2]), bytes(r[3])) for r in rows]

    async def replace_wrapped_data_keys(
        self, pairs: Sequence[tuple[WrappedDataKey, WrappedDataKey]]
    ) -> None:
        # Each row is compared and swapped: a data key that changed meanwhile fails the batch.
        async with self.db.writing(lock=None) as conn:
            now = utc_text()
            for old, new in pairs:
                changed = await conn.execute(
                    "UPDATE data_keys SET kek_id = ?, wrapped = ?, updated_at = ?"
                    " WHERE user_id = ? AND dek_id = ? AND kek_id = ? AND wrapped = ?",
                    (new.kek_id, new.blob, now, old.user_id, old.dek_id, old.kek_id, old.blob),
                )
                if changed != 1:
                    raise RewrapConflict(old.user_id)

    async def data_key_counts(self) -> dict[str, int]:
        rows = await self.db.fetch_all("SELECT kek_id, COUNT(*) FROM data_keys GROUP BY kek_id")
        return {str(r[0]): int(r[1]) for r in rows}

    async def row_seal_counts(self) -> dict[str, int]:
        rows = await self.db.fetch_all(
            "SELECT seal_kek, count(*) FROM (SELECT seal_kek FROM api_tokens"
            " UNION ALL SELECT seal_kek FROM sessions) AS seals WHERE seal_kek IS NOT NULL"
            " GROUP BY seal_kek"
        )
        return {str(r[0]): int(r[1]) for r in rows}

    async def master_key_check_ids(self) -> set[str]:
        rows = await self.db.fetch_all("SELECT kek_id FROM master_key_checks")
        return {str(r[0]) for r in rows}
