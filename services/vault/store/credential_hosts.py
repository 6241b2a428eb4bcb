"""Storage of credentials' bound hosts (migration 7, column `credentials.hosts`).

The hosts are stored beside the value as canonical JSON (`[]` when unbound) and the value is
sealed for them, so they change only together with a value sealed anew (`set_credential_hosts`).
"""

from __future__ import annotations

from typing import Protocol

from services.vault.store import UNBOUND_HOSTS, AuditRecord, AuditSink, StoredCredential
from services.vault.store.database import Database, insert_audit, utc_text


class CredentialHostStore(AuditSink, Protocol):
    async def get_credential(self, user_id: str, key: str) -> StoredCredential | None:
        """One stored credential, if the user has it."""

    async def get_bound_credentials(self, user_id: str) -> dict[str, StoredCredential]:
        """The user's credentials that are bound to hosts, or whose values were sealed bound
        (`StoredCredential.sealed_bound`), by key."""

    async def set_credential_hosts(
        self, user_id: str, key: str, old_blob: bytes, new: StoredCredential, *, audit: AuditRecord
    ) -> bool:
        """Store `new` (a value sealed for its hosts) if the key still holds `old_blob`; False
        (nothing written, no audit row) if it is gone or was changed meanwhile."""


class SqlCredentialHostStore:
    """`CredentialHostStore` on the vault's database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def __repr__(self) -> str:
        return f"SqlCredentialHostStore({self.db!r})"

    async def get_credential(self, user_id: str, key: str) -> StoredCredential | None:
        row = await self.db.fetch_small(
            "SELECT blob, hosts FROM credentials WHERE user_id = ? AND key = ?", (user_id, key)
        )
        return StoredCredential(bytes(row[0][0]), str(row[0][1])) if row else None

    async def get_bound_credentials(self, user_id: str) -> dict[str, StoredCredential]:
        rows = await self.db.fetch_all(
            "SELECT key, blob, hosts FROM credentials WHERE user_id = ?"
            f" AND (hosts != ? OR {self.db.dialect.byte_at_0.format('blob')} = 2) ORDER BY key",
            (user_id, UNBOUND_HOSTS),
        )
        return {str(row[0]): StoredCredential(bytes(row[1]), str(row[2])) for row in rows}

    async def set_credential_hosts(
        self, user_id: str, key: str, old_blob: bytes, new: StoredCredential, *, audit: AuditRecord
    ) -> bool:
        async with self.db.writing(lock=user_id) as conn:
            changed = 0 < await conn.execute(
                "UPDATE credentials SET blob = ?, hosts = ?, updated_at = ?"
                " WHERE user_id = ? AND key = ? AND blob = ?",
                (new.blob, new.hosts, utc_text(), user_id, key, old_blob),
            )
            if changed:
                await insert_audit(conn, audit)
        return changed

    async def append_audit(self, record: AuditRecord) -> None:
        await self.db.append_audit(record)


def _implements(store: SqlCredentialHostStore) -> CredentialHostStore:
    """Lets mypy check that this backend implements the whole interface."""
    return store
