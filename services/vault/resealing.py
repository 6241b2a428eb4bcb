"""Completing migration 6 in place, and re-sealing rows after a master key rotation.

Migration 6 (SQL) adds the seal columns and records in `row_seal_pending` what rows written
before it still lack: token and session rows have no seal, providers' headers are sealed with
the old AAD purpose that leaves the configuration out. Sealing needs the keyring, which SQL does
not have, so the first process that opens the database with the keyring (the vault at start, or
`aicreds-admin`) completes it, before serving anything: `seal_legacy_rows`, in one
transaction, so a crash leaves all of it or none and the next start does it again. Once the
pending rows are gone, an unsealed token or a provider sealed the old way is an integrity error.

Why at start and not lazily on first use: a lazy upgrade would have to accept unsealed rows for
as long as any remains, so a row tampered with later could pass for one never upgraded. Done at
start, the window is the upgrade itself. (Rows as they are at that moment are trusted: a
database restored, or forged, to look as if migration 6 were pending cannot be told apart from
a real one without the keyring having seen it; the vault logs every row it seals this way.)

`reseal_rows` moves token and session seals to the primary master key (`aicreds-admin keys
rewrap` runs it after re-wrapping data keys), so that an old key can be retired.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from services.vault.envelope import Envelope
from services.vault.errors import DecryptionFailed
from services.vault.providers import legacy_headers_purpose, record_purpose
from services.vault.row_seals import PROVIDER_ROW, report_integrity_error
from services.vault.store import ProviderRecord
from services.vault.store.tokens import RESEAL_LOCK, SqlAuthStore
from services.vault.store.vault_tables import PROVIDER_COLUMNS, provider_record

_log = logging.getLogger("aicreds.vault.resealing")
_RESEAL_BATCH = 500


@dataclass(frozen=True)
class LegacySealing:
    """What `seal_legacy_rows` sealed in place."""

    tokens: int = 0
    sessions: int = 0
    providers: int = 0
    refused_providers: int = 0


async def seal_legacy_rows(auth: SqlAuthStore, envelope: Envelope) -> LegacySealing | None:
    """Seal the rows migration 6 left pending, in one transaction; None when none were pending
    (every start after the first: one small read)."""
    db = auth.db
    if not await db.fetch_all("SELECT kind FROM row_seal_pending"):
        return None
    async with db.writing(lock=RESEAL_LOCK) as conn:
        pending = {str(row[0]) for row in await conn.fetch_all("SELECT kind FROM row_seal_pending")}
        tokens = sessions = providers = refused = 0
        if pending & {"api_token", "session"}:
            tokens, sessions = await auth.seal_unsealed_rows(conn)
        if "provider" in pending:
            rows = await conn.fetch_all(
                f"SELECT {PROVIDER_COLUMNS} FROM providers ORDER BY user_id, name"
            )
            for row in rows:
                record = provider_record(row)
                blob = await _resealed_headers(envelope, record)
                if blob is None:
                    refused += 1
                    continue
                if blob is not record.headers_blob:
                    await conn.execute(
                        "UPDATE providers SET headers = ? WHERE user_id = ? AND name = ?",
                        (blob, record.user_id, record.name),
                    )
                    providers += 1
        await conn.execute("DELETE FROM row_seal_pending")
    result = LegacySealing(tokens, sessions, providers, refused)
    _log.log(
        logging.WARNING if tokens or sessions or providers or refused else logging.INFO,
        "sealed rows written before migration 6 in place (once, at the first start with the "
        "keyring)",
        extra={
            "fields": {
                "tokens": tokens,
                "sessions": sessions,
                "providers": providers,
                "providers_refused": refused,
            }
        },
    )
    return result


async def _resealed_headers(envelope: Envelope, record: ProviderRecord) -> bytes | None:
    """The headers sealed with the configuration in their AAD: the blob itself when it already
    is, a new blob when it was sealed the old way, None (reported) when it opens neither way."""
    # The data key exists (the headers were sealed with it), so sealing below writes nothing.
    opener = await envelope.opener_for(record.user_id)
    try:
        opener.open(record_purpose(record), record.headers_blob)
        return record.headers_blob
    except DecryptionFailed:
        pass
    try:
        text = opener.open(legacy_headers_purpose(record.name), record.headers_blob)
    except DecryptionFailed:
        report_integrity_error(PROVIDER_ROW, record.name, record.user_id)
        return None
    return await envelope.seal(record.user_id, record_purpose(record), text)


async def reseal_rows(auth: SqlAuthStore, primary_id: str) -> int:
    """Re-seal every token and session row under the primary master key `primary_id`, one
    transaction per batch; how many rows were re-sealed."""
    total = 0
    while handled := await auth.reseal_rows_not_under(primary_id, _RESEAL_BATCH):
        total += handled
    return total
