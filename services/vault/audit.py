"""Audit records (SPEC 4.5): who did what to whose data, with key names and never values.

Successful changes are appended by the store in the same transaction as the change; failed
requests and every `Resolve` are appended through `AuditSink.append_audit` in their own
(which concurrent appends may share: a group commit).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime

from services.common.errors import AicredsError
from services.vault.store import AuditRecord, AuditSink

OK = "ok"
_log = logging.getLogger("aicreds.vault.audit")


def audit_record(
    caller: str, user_id: str, action: str, keys: Iterable[str] = (), outcome: str = OK
) -> AuditRecord:
    return AuditRecord(
        time=datetime.now(UTC),
        caller=caller,
        user_id=user_id,
        action=action,
        keys=tuple(keys),
        outcome=outcome,
    )


def map_changes(before: Mapping[str, bytes], after: Mapping[str, bytes]) -> tuple[str, ...]:
    """The audit keys of a replace-all: `added:<key>`, `changed:<key>` (its stored blob was
    replaced: a value that stays the same keeps its blob) and `removed:<key>`, sorted by key.
    Credential keys cannot hold a colon, so the prefix is unambiguous."""
    entries = [f"added:{k}" for k in after if k not in before]
    entries += [f"changed:{k}" for k in after if k in before and before[k] != after[k]]
    entries += [f"removed:{k}" for k in before if k not in after]
    return tuple(sorted(entries, key=lambda entry: (entry.partition(":")[2], entry)))


def outcome_of(err: BaseException) -> str:
    """The audit outcome of a failed request: the error's reason, else `internal`."""
    return err.reason if isinstance(err, AicredsError) else "internal"


async def append_quietly(sink: AuditSink, record: AuditRecord) -> None:
    """Append a record; a failing audit write is logged and does not hide the request's error."""
    try:
        await sink.append_audit(record)
    except Exception as err:
        _log.error(
            "could not append an audit record",
            extra={"fields": {"action": record.action, "error": type(err).__name__}},
        )


@asynccontextmanager
async def audit_failures(sink: AuditSink, record: AuditRecord) -> AsyncIterator[None]:
    """Audit the request as failed (with the error's reason) if the block raises."""
    try:
        yield
    except Exception as err:
        await append_quietly(sink, replace(record, outcome=outcome_of(err)))
        raise
