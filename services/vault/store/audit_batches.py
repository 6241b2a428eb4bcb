"""Group commit of audit rows appended on their own (every `Resolve`, failed requests).

The rows that arrive while a commit is under way are written together by the next one, as one
multi-row INSERT (one statement, one transaction, one commit). Each append returns only once the
commit holding its row has succeeded, and raises if that commit failed, so an audit that was not
written is never reported as written. Both backends use it; each says how one batch is written.

A batch is committed (atomic, visible to every connection, replica and process) before its
appends return, but its sync to disk is not waited for: the backend syncs it within a bounded
time in the background (SQLite: `sqlite_checkpoints`; PostgreSQL: its WAL writer), so a busy
disk never holds up a `Resolve`. Only a power loss or OS crash inside that window can lose it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from services.vault.metrics import AUDIT_BATCH_ROWS
from services.vault.store import AuditRecord
from services.vault.store.database import AUDIT_VALUES, INSERT_AUDIT, audit_row

# Rows per group commit: 6 parameters each, well under SQLite's parameter limit (32,766 since
# 3.32, 999 before) and PostgreSQL's (65,535).
BATCH_ROWS = 160

WriteBatch = Callable[[str, Sequence[object]], Awaitable[None]]
"""Runs one INSERT statement with its parameters as one transaction, committed on return
(its sync to disk may follow, within the backend's bound)."""


def batch_insert(rows: int) -> str:
    """The INSERT statement of `rows` audit rows."""
    return INSERT_AUDIT + ", ".join([AUDIT_VALUES] * rows)


class AuditBatches:
    """Queues appended audit rows and writes them in batches, one batch at a time."""

    def __init__(self, write: WriteBatch) -> None:
        self._write = write
        self._queue: list[tuple[tuple[object, ...], asyncio.Future[None]]] = []
        self._flush: asyncio.Task[None] | None = None

    async def append(self, record: AuditRecord) -> None:
        """Queue one row and wait until the batch holding it is written (or raise).

        An append whose caller is cancelled meanwhile is still written (its row is queued; only
        its future is cancelled, which the flush then leaves alone).
        """
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((audit_row(record), done))
        if self._flush is None:
            self._flush = asyncio.create_task(self._flush_all())
        await done

    async def drain(self) -> None:
        """Wait until the appends under way are written (before closing the database)."""
        if self._flush is not None:
            await asyncio.wait([self._flush])

    async def _flush_all(self) -> None:
        """Write the queued rows, batch after batch, until the queue is empty."""
        try:
            while self._queue:
                batch = self._queue[:BATCH_ROWS]
                del self._queue[:BATCH_ROWS]
                rows = [row for row, _ in batch]
                try:
                    await self._write(batch_insert(len(rows)), [v for row in rows for v in row])
                except BaseException as err:
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(_batch_failure(err))
                    if not isinstance(err, Exception):
                        raise
                else:
                    AUDIT_BATCH_ROWS.observe(len(rows))
                    for _, done in batch:
                        if not done.done():
                            done.set_result(None)
        finally:
            self._flush = None
            for _, done in self._queue:  # only if the flush itself was cancelled
                if not done.done():
                    done.set_exception(RuntimeError("the audit log was closed"))
            self._queue.clear()


def _batch_failure(err: BaseException) -> BaseException:
    """What each append of a failed batch raises: the error itself, or for a cancelled flush
    (the vault closing) an error, so that no caller mistakes it for its own cancellation."""
    if isinstance(err, Exception):
        return err
    return RuntimeError("the audit batch was not written")
