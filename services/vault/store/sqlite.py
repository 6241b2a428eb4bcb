"""The SQLite implementation of `VaultStore` (the embedded default backend)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from services.vault.store import (
    AuditRecord,
    ProviderRecord,
    ResolveRows,
    VaultStore,
    WrappedDataKey,
)
from services.vault.store.sqlite_db import SqliteDatabase, insert_audit, utc_text


class SqliteVaultStore:
    """Data keys, credentials, providers and audit appends in one SQLite database."""

    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    def __repr__(self) -> str:
        return f"SqliteVaultStore({self.db!r})"

    @classmethod
    async def open(cls, path: Path) -> SqliteVaultStore:
        return cls(await SqliteDatabase.open(path))

    async def close(self) -> None:
        await self.db.close()

    # -- data keys and master key checks ------------------------------------------------------

    async def get_data_key(self, user_id: str) -> WrappedDataKey | None:
        row = await self.db.fetch_one(
            "SELECT dek_id, kek_id, wrapped FROM data_keys WHERE user_id = ?", (user_id,)
        )
        if row is None:
            return None
        return WrappedDataKey(user_id, str(row[0]), str(row[1]), bytes(row[2]))

    async def add_data_key(self, key: WrappedDataKey) -> WrappedDataKey:
        async with self.db.writing() as conn:
            now = utc_text()
            await conn.execute(
                "INSERT INTO data_keys (user_id, dek_id, kek_id, wrapped, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (user_id) DO NOTHING",
                (key.user_id, key.dek_id, key.kek_id, key.blob, now, now),
            )
            async with conn.execute(
                "SELECT dek_id, kek_id, wrapped FROM data_keys WHERE user_id = ?", (key.user_id,)
            ) as cursor:
                row = await cursor.fetchone()
        assert row is not None
        return WrappedDataKey(key.user_id, row[0], row[1], bytes(row[2]))

    async def master_key_ids_in_use(self) -> set[str]:
        rows = await self.db.fetch_all("SELECT DISTINCT kek_id FROM data_keys")
        return {str(row[0]) for row in rows}

    async def get_master_key_checks(self) -> dict[str, bytes]:
        rows = await self.db.fetch_all("SELECT kek_id, blob FROM master_key_checks")
        return {str(row[0]): bytes(row[1]) for row in rows}

    async def add_master_key_check(self, kek_id: str, blob: bytes) -> None:
        async with self.db.writing() as conn:
            await conn.execute(
                "INSERT INTO master_key_checks (kek_id, blob, created_at) VALUES (?, ?, ?)"
                " ON CONFLICT (kek_id) DO NOTHING",
                (kek_id, blob, utc_text()),
            )

    # -- credentials --------------------------------------------------------------------------

    async def get_credentials(self, user_id: str) -> dict[str, bytes]:
        rows = await self.db.fetch_all(
            "SELECT key, blob FROM credentials WHERE user_id = ? ORDER BY key", (user_id,)
        )
        return {str(row[0]): bytes(row[1]) for row in rows}

    async def get_credentials_named(self, user_id: str, keys: Sequence[str]) -> dict[str, bytes]:
        if not keys:
            return {}
        found: dict[str, bytes] = {}
        # Bounded IN lists keep well under SQLite's parameter limit.
        for start in range(0, len(keys), 500):
            chunk = list(keys[start : start + 500])
            marks = ", ".join("?" for _ in chunk)
            # Values named by the caller, each at most 16 KiB: small enough to read inline.
            rows = await self.db.fetch_small(
                f"SELECT key, blob FROM credentials WHERE user_id = ? AND key IN ({marks})",
                (user_id, *chunk),
            )
            found.update({str(row[0]): bytes(row[1]) for row in rows})
        return found

    async def put_credential(
        self, user_id: str, key: str, blob: bytes, *, audit: AuditRecord
    ) -> None:
        async with self.db.writing() as conn:
            await conn.execute(
                "INSERT INTO credentials (user_id, key, blob, updated_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (user_id, key) DO UPDATE SET blob = excluded.blob,"
                " updated_at = excluded.updated_at",
                (user_id, key, blob, utc_text()),
            )
            await insert_audit(conn, audit)

    async def replace_credentials(
        self, user_id: str, blobs: Mapping[str, bytes], *, audit: AuditRecord
    ) -> None:
        async with self.db.writing() as conn:
            now = utc_text()
            await conn.execute("DELETE FROM credentials WHERE user_id = ?", (user_id,))
            await conn.executemany(
                "INSERT INTO credentials (user_id, key, blob, updated_at) VALUES (?, ?, ?, ?)",
                [(user_id, key, blob, now) for key, blob in blobs.items()],
            )
            await insert_audit(conn, audit)

    async def delete_credential(self, user_id: str, key: str, *, audit: AuditRecord) -> bool:
        return await self._change_one(
            "DELETE FROM credentials WHERE user_id = ? AND key = ?", (user_id, key), audit
        )

    async def delete_credentials(self, user_id: str, *, audit: AuditRecord) -> int:
        async with self.db.writing() as conn:
            cursor = await conn.execute("DELETE FROM credentials WHERE user_id = ?", (user_id,))
            deleted: int = max(cursor.rowcount, 0)
            await cursor.close()
            await insert_audit(conn, audit)
        return deleted

    # -- providers ----------------------------------------------------------------------------

    _PROVIDER_COLUMNS = "user_id, name, kind, base_url, models, on_missing_credential, headers"

    async def get_provider(self, user_id: str, name: str) -> ProviderRecord | None:
        row = await self.db.fetch_one(
            f"SELECT {self._PROVIDER_COLUMNS} FROM providers WHERE user_id = ? AND name = ?",
            (user_id, name),
        )
        return _provider(row) if row is not None else None

    async def list_providers(self, user_id: str) -> list[ProviderRecord]:
        rows = await self.db.fetch_all(
            f"SELECT {self._PROVIDER_COLUMNS} FROM providers WHERE user_id = ? ORDER BY name",
            (user_id,),
        )
        return [_provider(row) for row in rows]

    async def create_provider(self, record: ProviderRecord, *, audit: AuditRecord) -> bool:
        now = utc_text()
        return await self._change_one(
            f"INSERT INTO providers ({self._PROVIDER_COLUMNS}, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (user_id, name) DO NOTHING",
            (*_provider_values(record), now, now),
            audit,
        )

    async def update_provider(self, record: ProviderRecord, *, audit: AuditRecord) -> bool:
        return await self._change_one(
            "UPDATE providers SET kind = ?, base_url = ?, models = ?,"
            " on_missing_credential = ?, headers = ?, updated_at = ?"
            " WHERE user_id = ? AND name = ?",
            (*_provider_values(record)[2:], utc_text(), record.user_id, record.name),
            audit,
        )

    async def delete_provider(self, user_id: str, name: str, *, audit: AuditRecord) -> bool:
        return await self._change_one(
            "DELETE FROM providers WHERE user_id = ? AND name = ?", (user_id, name), audit
        )

    # -- resolve ------------------------------------------------------------------------------

    async def get_resolve_rows(self, user_id: str) -> ResolveRows:
        # One statement, read on the event loop (see `fetch_small`): one snapshot of both
        # tables. The first column says which table a row comes from.
        rows = await self.db.fetch_small(_RESOLVE_ROWS, (user_id,))
        providers: list[ProviderRecord] = []
        data_key: WrappedDataKey | None = None
        for row in rows:
            if row[0] == "p":
                providers.append(_provider(row[1:]))
            else:
                data_key = WrappedDataKey(user_id, str(row[2]), str(row[3]), bytes(row[7]))
        providers.sort(key=lambda record: record.name)
        return ResolveRows(tuple(providers), data_key)

    # -- audit --------------------------------------------------------------------------------

    async def append_audit(self, record: AuditRecord) -> None:
        await self.db.append_audit(record)

    async def _change_one(self, sql: str, params: Sequence[object], audit: AuditRecord) -> bool:
        """Run one write; append `audit` in the same transaction only if it changed a row."""
        async with self.db.writing() as conn:
            cursor = await conn.execute(sql, params)
            changed: bool = cursor.rowcount > 0
            await cursor.close()
            if changed:
                await insert_audit(conn, audit)
        return changed


_RESOLVE_ROWS = (
    f"SELECT 'p', {SqliteVaultStore._PROVIDER_COLUMNS} FROM providers WHERE user_id = ?1"
    " UNION ALL SELECT 'd', user_id, dek_id, kek_id, NULL, NULL, NULL, wrapped"
    " FROM data_keys WHERE user_id = ?1"
)


def _provider(row: Sequence[Any]) -> ProviderRecord:
    return ProviderRecord(
        user_id=str(row[0]),
        name=str(row[1]),
        kind=str(row[2]),
        base_url=str(row[3]),
        models=tuple(json.loads(str(row[4]))),
        on_missing_credential=str(row[5]),
        headers_blob=bytes(row[6]),
    )


def _provider_values(record: ProviderRecord) -> tuple[object, ...]:
    return (
        record.user_id,
        record.name,
        record.kind,
        record.base_url,
        json.dumps(list(record.models)),
        record.on_missing_credential,
        record.headers_blob,
    )


def _implements_vault_store(store: SqliteVaultStore) -> VaultStore:
    """Lets mypy check that this backend implements the whole interface."""
    return store
