"""`VaultStore` on either backend's database (`database.Database`): data keys, credentials,
providers, the rows `Resolve` reads, and audit appends."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from services.vault.audit import map_changes
from services.vault.bulk_reads import INLINE_BATCH_BYTES
from services.vault.store import (
    UNBOUND_HOSTS,
    AuditRecord,
    ProviderRecord,
    ResolveRows,
    StoredCredential,
    VaultStore,
    WrappedDataKey,
)
from services.vault.store.database import Database, Dialect, Transaction, insert_audit, utc_text
from services.vault.user_limits import (
    ProviderUsage,
    UserLimits,
    check_credential_map,
    check_provider_write,
    provider_size,
)

# Resolve reads its rows on the event loop (`fetch_small`) while they are bounded by the
# provider limit (the same 1 MiB as the bulk reads' inline bound); a vault configured for
# larger providers reads them on a reader's thread.
# Credential values read on the event loop at most (each at most 16 KiB); more go to a thread.
_INLINE_CREDENTIALS = 32


PROVIDER_COLUMNS = "user_id, name, kind, base_url, models, on_missing_credential, headers"


@dataclass(frozen=True)
class _SizeSql:
    """The plaintext bytes of stored rows, in the backend's SQL, as `user_limits` counts them."""

    credential: str
    provider: str

    @classmethod
    def of(cls, dialect: Dialect) -> _SizeSql:
        length = dialect.octet_length
        return cls(
            credential=f"{length.format('key')} + {dialect.blob_plaintext('blob')}",
            provider=(
                f"{length.format('name')} + {length.format('base_url')}"
                f" + {length.format('models')} + {dialect.blob_plaintext('headers')}"
            ),
        )


class SqlVaultStore:
    """Data keys, credentials, providers and audit appends in the vault's database."""

    def __init__(self, db: Database, limits: UserLimits | None = None) -> None:
        self.db = db
        self._limits = limits or UserLimits()
        self._sizes = _SizeSql.of(db.dialect)

    def __repr__(self) -> str:
        return f"SqlVaultStore({self.db!r})"

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
        # Two replicas adding a user's first key at once: the second INSERT waits for the first
        # to commit, then does nothing, and both read the one that won.
        async with self.db.writing(lock=None) as conn:
            now = utc_text()
            await conn.execute(
                "INSERT INTO data_keys (user_id, dek_id, kek_id, wrapped, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (user_id) DO NOTHING",
                (key.user_id, key.dek_id, key.kek_id, key.blob, now, now),
            )
            row = await conn.fetch_one(
                "SELECT dek_id, kek_id, wrapped FROM data_keys WHERE user_id = ?", (key.user_id,)
            )
        assert row is not None
        return WrappedDataKey(key.user_id, row[0], row[1], bytes(row[2]))

    async def master_key_ids_in_use(self) -> set[str]:
        # Row seals (migration 6) name their master key too: a keyring without it would refuse
        # every token and session sealed with it.
        rows = await self.db.fetch_all(
            "SELECT kek_id FROM data_keys UNION SELECT seal_kek FROM api_tokens"
            " WHERE seal_kek IS NOT NULL UNION SELECT seal_kek FROM sessions"
            " WHERE seal_kek IS NOT NULL"
        )
        return {str(row[0]) for row in rows}

    async def get_master_key_checks(self) -> dict[str, bytes]:
        rows = await self.db.fetch_all("SELECT kek_id, blob FROM master_key_checks")
        return {str(row[0]): bytes(row[1]) for row in rows}

    async def add_master_key_check(self, kek_id: str, blob: bytes) -> None:
        async with self.db.writing(lock=None) as conn:
            await conn.execute(
                "INSERT INTO master_key_checks (kek_id, blob, created_at) VALUES (?, ?, ?)"
                " ON CONFLICT (kek_id) DO NOTHING",
                (kek_id, blob, utc_text()),
            )

    # -- credentials --------------------------------------------------------------------------

    async def get_credentials(self, user_id: str) -> dict[str, StoredCredential]:
        rows = await self.db.fetch_all(
            "SELECT key, blob, hosts FROM credentials WHERE user_id = ? ORDER BY key", (user_id,)
        )
        return {str(row[0]): _stored(row) for row in rows}

    async def get_credentials_named(
        self, user_id: str, keys: Sequence[str]
    ) -> dict[str, StoredCredential]:
        if not keys:
            return {}
        found: dict[str, StoredCredential] = {}
        # A few values (each at most 16 KiB) are read right on the event loop; more, on a
        # reader's thread, so that no request holds up the others for long.
        fetch = self.db.fetch_small if len(keys) <= _INLINE_CREDENTIALS else self.db.fetch_all
        # Bounded IN lists keep well under SQLite's parameter limit.
        for start in range(0, len(keys), 500):
            chunk = list(keys[start : start + 500])
            marks = ", ".join("?" for _ in chunk)
            rows = await fetch(
                f"SELECT key, blob, hosts FROM credentials WHERE user_id = ? AND key IN ({marks})",
                (user_id, *chunk),
            )
            found.update({str(row[0]): _stored(row) for row in rows})
        return found

    async def put_credential(
        self,
        user_id: str,
        key: str,
        blob: bytes,
        *,
        audit: AuditRecord,
        hosts: str = UNBOUND_HOSTS,
    ) -> bool:
        async with self.db.writing(lock=user_id) as conn:
            # An existing row is updated only if its binding is the one the value was sealed
            # for; a new row takes that binding.
            written = await conn.execute(
                "INSERT INTO credentials (user_id, key, blob, hosts, updated_at)"
                " VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (user_id, key) DO UPDATE SET blob = excluded.blob,"
                " updated_at = excluded.updated_at WHERE credentials.hosts = excluded.hosts",
                (user_id, key, blob, hosts, utc_text()),
            )
            if not written:
                return False
            await self._check_credential_map(conn, user_id)
            await insert_audit(conn, audit)
        return True

    async def replace_credentials(
        self,
        user_id: str,
        blobs: Mapping[str, bytes],
        *,
        audit: AuditRecord,
        hosts: Mapping[str, str] | None = None,
    ) -> bool:
        kept = {key: text for key, text in (hosts or {}).items() if key in blobs}
        async with self.db.writing(lock=user_id) as conn:
            rows = await conn.fetch_all(
                "SELECT key, hosts FROM credentials WHERE user_id = ? AND hosts != ?",
                (user_id, UNBOUND_HOSTS),
            )
            bound = {str(row[0]): str(row[1]) for row in rows}
            if any(bound.get(key, UNBOUND_HOSTS) != kept.get(key, UNBOUND_HOSTS) for key in blobs):
                return False
            now = utc_text()
            rows = await conn.fetch_all(
                "DELETE FROM credentials WHERE user_id = ? RETURNING key, blob", (user_id,)
            )
            before = {str(row[0]): bytes(row[1]) for row in rows}
            await conn.execute_many(
                "INSERT INTO credentials (user_id, key, blob, hosts, updated_at)"
                " VALUES (?, ?, ?, ?, ?)",
                [
                    (user_id, key, blob, kept.get(key, UNBOUND_HOSTS), now)
                    for key, blob in blobs.items()
                ],
            )
            await self._check_credential_map(conn, user_id)
            await insert_audit(conn, replace(audit, keys=map_changes(before, blobs)))
        return True

    async def delete_credential(self, user_id: str, key: str, *, audit: AuditRecord) -> bool:
        return await self._change_one(
            "DELETE FROM credentials WHERE user_id = ? AND key = ?", (user_id, key), audit, user_id
        )

    async def delete_credentials(self, user_id: str, *, audit: AuditRecord) -> int:
        async with self.db.writing(lock=user_id) as conn:
            rows = await conn.fetch_all(
                "DELETE FROM credentials WHERE user_id = ? RETURNING key", (user_id,)
            )
            deleted = sorted(str(row[0]) for row in rows)
            await insert_audit(conn, replace(audit, keys=tuple(deleted)))
        return len(deleted)

    # -- providers ----------------------------------------------------------------------------

    async def get_provider(self, user_id: str, name: str) -> ProviderRecord | None:
        row = await self.db.fetch_one(
            f"SELECT {PROVIDER_COLUMNS} FROM providers WHERE user_id = ? AND name = ?",
            (user_id, name),
        )
        return provider_record(row) if row is not None else None

    async def list_providers(self, user_id: str) -> list[ProviderRecord]:
        rows = await self.db.fetch_all(
            f"SELECT {PROVIDER_COLUMNS} FROM providers WHERE user_id = ? ORDER BY name",
            (user_id,),
        )
        return [provider_record(row) for row in rows]

    async def create_provider(self, record: ProviderRecord, *, audit: AuditRecord) -> bool:
        now = utc_text()
        async with self.db.writing(lock=record.user_id) as conn:
            if await _provider_exists(conn, record.user_id, record.name):
                return False
            others = await self._provider_usage(conn, record.user_id, record.name)
            check_provider_write(self._limits, others, _record_size(record), creating=True)
            await conn.execute(
                f"INSERT INTO providers ({PROVIDER_COLUMNS}, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*_provider_values(record), now, now),
            )
            await _index_models(conn, record)
            await insert_audit(conn, audit)
        return True

    async def update_provider(self, record: ProviderRecord, *, audit: AuditRecord) -> bool:
        async with self.db.writing(lock=record.user_id) as conn:
            if not await _provider_exists(conn, record.user_id, record.name):
                return False
            others = await self._provider_usage(conn, record.user_id, record.name)
            check_provider_write(self._limits, others, _record_size(record), creating=False)
            await conn.execute(
                "UPDATE providers SET kind = ?, base_url = ?, models = ?,"
                " on_missing_credential = ?, headers = ?, updated_at = ?"
                " WHERE user_id = ? AND name = ?",
                (*_provider_values(record)[2:], utc_text(), record.user_id, record.name),
            )
            await conn.execute(
                "DELETE FROM provider_models WHERE user_id = ? AND provider = ?",
                (record.user_id, record.name),
            )
            await _index_models(conn, record)
            await insert_audit(conn, audit)
        return True

    async def delete_provider(self, user_id: str, name: str, *, audit: AuditRecord) -> bool:
        # Its rows in provider_models go with it (ON DELETE CASCADE).
        return await self._change_one(
            "DELETE FROM providers WHERE user_id = ? AND name = ?", (user_id, name), audit, user_id
        )

    # -- resolve ------------------------------------------------------------------------------

    async def get_resolve_rows(self, user_id: str, name: str) -> ResolveRows:
        return await self._resolve_rows(_RESOLVE_BY_NAME, (user_id, name), user_id)

    async def get_model_resolve_rows(
        self, user_id: str, model: str, prefix: str | None
    ) -> ResolveRows:
        return await self._resolve_rows(_RESOLVE_BY_MODEL, (user_id, prefix, model), user_id)

    async def _resolve_rows(self, sql: str, params: Sequence[object], user_id: str) -> ResolveRows:
        # One statement: one snapshot of both tables, at most two providers found by key. The
        # first column says which table a row comes from.
        if self._limits.max_provider_bytes <= INLINE_BATCH_BYTES:
            rows = await self.db.fetch_small(sql, params)
        else:
            rows = await self.db.fetch_all(sql, params)
        providers: list[ProviderRecord] = []
        data_key: WrappedDataKey | None = None
        for row in rows:
            if row[0] == "p":
                providers.append(provider_record(row[1:]))
            else:
                data_key = WrappedDataKey(user_id, str(row[2]), str(row[3]), bytes(row[7]))
        providers.sort(key=lambda record: record.name)
        return ResolveRows(tuple(providers), data_key)

    # -- audit --------------------------------------------------------------------------------

    async def append_audit(self, record: AuditRecord) -> None:
        await self.db.append_audit(record)

    async def _change_one(
        self, sql: str, params: Sequence[object], audit: AuditRecord, user_id: str
    ) -> bool:
        """Run one write; append `audit` in the same transaction only if it changed a row."""
        async with self.db.writing(lock=user_id) as conn:
            changed = await conn.execute(sql, params) > 0
            if changed:
                await insert_audit(conn, audit)
        return changed

    async def _check_credential_map(self, conn: Transaction, user_id: str) -> None:
        """Measure the user's map as the transaction has made it; LimitExceeded rolls it back."""
        row = await conn.fetch_one(
            f"SELECT coalesce(sum({self._sizes.credential}), 0) FROM credentials WHERE user_id = ?",
            (user_id,),
        )
        check_credential_map(self._limits, int(row[0]) if row is not None else 0)

    async def _provider_usage(self, conn: Transaction, user_id: str, name: str) -> ProviderUsage:
        """The user's providers other than `name`: how many, and their size by `provider_size`."""
        row = await conn.fetch_one(
            f"SELECT count(*), coalesce(sum({self._sizes.provider}), 0) FROM providers"
            " WHERE user_id = ? AND name != ?",
            (user_id, name),
        )
        assert row is not None
        return ProviderUsage(count=int(row[0]), stored_bytes=int(row[1]))


_DATA_KEY_ROW = (
    " UNION ALL SELECT 'd', user_id, dek_id, kek_id, NULL, NULL, NULL, wrapped"
    " FROM data_keys WHERE user_id = ?1"
)
_RESOLVE_BY_NAME = (
    f"SELECT 'p', {PROVIDER_COLUMNS} FROM providers"
    " WHERE user_id = ?1 AND name = ?2" + _DATA_KEY_ROW
)
# The provider named by the prefix, and the first by name of those listing the model (through
# the index: neither reads any other provider row).
_RESOLVE_BY_MODEL = (
    f"SELECT 'p', {PROVIDER_COLUMNS} FROM providers WHERE user_id = ?1"
    " AND (name = ?2 OR name = (SELECT min(provider) FROM provider_models"
    " WHERE user_id = ?1 AND model = ?3))" + _DATA_KEY_ROW
)


async def _provider_exists(conn: Transaction, user_id: str, name: str) -> bool:
    found = await conn.fetch_one(
        "SELECT 1 FROM providers WHERE user_id = ? AND name = ?", (user_id, name)
    )
    return found is not None


async def _index_models(conn: Transaction, record: ProviderRecord) -> None:
    await conn.execute_many(
        "INSERT INTO provider_models (user_id, model, provider) VALUES (?, ?, ?)"
        " ON CONFLICT DO NOTHING",
        [(record.user_id, model, record.name) for model in record.models],
    )


def _record_size(record: ProviderRecord) -> int:
    return provider_size(
        record.name, record.base_url, json.dumps(list(record.models)), record.headers_blob
    )


def _stored(row: Sequence[Any]) -> StoredCredential:
    return StoredCredential(bytes(row[1]), str(row[2]))


def provider_record(row: Sequence[Any]) -> ProviderRecord:
    """A provider from a row read with `PROVIDER_COLUMNS`."""
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


def _implements_vault_store(store: SqlVaultStore) -> VaultStore:
    """Lets mypy check that this backend implements the whole interface."""
    return store
