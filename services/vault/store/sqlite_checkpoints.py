"""SQLite's WAL checkpoints and syncs, in the background at a bounded interval.

Audit batches commit with `synchronous=NORMAL` (`sqlite_db`): the commit is atomic, visible to
every connection and process at once, and survives the vault's own crash, but waits for no
sync, so a power loss or an OS crash may lose what it wrote since the last sync. This task
bounds that window. Every `interval`, on a thread and a connection of its own, it runs a PASSIVE
checkpoint: SQLite syncs the WAL, copies its frames into the database file and syncs that, while
readers and writers go on. When the checkpoint stops short (a reader still uses a frame), the
WAL is synced here explicitly, as SQLite syncs it only when it has frames to copy. So a commit is
on disk at most one interval (and one checkpoint) after it returned. On close, a last one.

Automatic checkpoints are off on every connection (`wal_autocheckpoint=0`): otherwise the
commit that crosses 1,000 WAL pages would run one, with its syncs, inside a request.

SQLite starts the WAL over from its beginning only when a commit finds every frame copied, which
a checkpoint running beside steady writes never achieves: the WAL would grow for good. So when a
tick finds more than `restart_bytes` of frames in it, it holds the vault's write lock (writes
wait, reads do not) while a RESTART checkpoint copies the last ones, for at most
`_BUSY_TIMEOUT_MS` (a restart kept from finishing is tried again after more and more ticks).
That wait and the sync of the new WAL header by the next commit are the only syncs a write of
this vault can wait for besides its own, once per `restart_bytes` of WAL (64 MiB: every ten
seconds or more at full load); under light load the checkpoints catch up and SQLite starts the
WAL over by itself, with the header's sync in the next commit. Such a commit is never one
written on the event loop: `next_commit_may_sync` tells `sqlite_db` when the next one may be it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

DEFAULT_SYNC_INTERVAL_MS = 1000
MAX_SYNC_INTERVAL_MS = 60_000
DEFAULT_RESTART_BYTES = 64 << 20
"""The bytes of frames in the WAL past which a tick starts it over."""
# How long a restart waits for another process's write or a reader: past it, a later tick
# tries again (meanwhile this vault's writes wait for it). Short, and a restart that failed is
# tried again only after twice as many ticks each time (up to `_MAX_RESTART_BACKOFF`): a
# reader that keeps an old snapshot for long (a backup, an operator's shell in a transaction)
# would otherwise stall every write of the vault for the whole timeout at every tick.
_BUSY_TIMEOUT_MS = 100
_MAX_RESTART_BACKOFF = 32
_FRAME_HEADER_BYTES = 24

_log = logging.getLogger("aicreds.vault")
T = TypeVar("T")


def wal_size_limit(restart_bytes: int) -> int:
    """`journal_size_limit`: what a WAL longer than its usual size is cut to when it starts
    over. Twice the restart size, so that the usual restart cuts nothing."""
    return 2 * restart_bytes


def _connect(path: Path, restart_bytes: int) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        conn.execute(f"PRAGMA journal_size_limit = {wal_size_limit(restart_bytes)}")
    except BaseException:
        conn.close()
        raise
    return conn


class BackgroundCheckpoints:
    """Checkpoints (and syncs) one database's WAL every `interval` seconds until closed."""

    def __init__(
        self, path: Path, interval: float, write_lock: asyncio.Lock, restart_bytes: int
    ) -> None:
        self._path = path
        self._wal = Path(f"{path}-wal")
        self._interval = interval
        self._write_lock = write_lock
        self._restart_bytes = restart_bytes
        # One thread of its own: a checkpoint that a busy disk holds up for a while delays
        # nothing else that runs on a thread.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-checkpoints")
        self._conn: sqlite3.Connection | None = None
        self._frame_bytes = 0  # a page and its frame header, once connected
        self._task: asyncio.Task[None] | None = None
        self._restart_backoff = 1  # ticks between restart attempts: doubled on each failure
        self._ticks_to_restart = 0
        self._checkpointing = False
        self._all_copied = True  # unknown at start: as if the WAL were to start over

    def __repr__(self) -> str:
        return f"BackgroundCheckpoints(path={str(self._path)!r}, interval={self._interval})"

    @classmethod
    async def start(
        cls,
        path: Path,
        interval: float,
        write_lock: asyncio.Lock,
        *,
        restart_bytes: int = DEFAULT_RESTART_BYTES,
    ) -> BackgroundCheckpoints:
        """Open the checkpoints' connection and start checkpointing in the running loop.
        `write_lock` is the one the database's writes hold (a restart holds it too)."""
        checkpoints = cls(path, interval, write_lock, restart_bytes)
        try:
            conn = checkpoints._conn = await checkpoints._on_thread(
                lambda: _connect(path, restart_bytes)
            )
            page_size = await checkpoints._on_thread(
                lambda: int(conn.execute("PRAGMA page_size").fetchone()[0])
            )
        except BaseException:
            if checkpoints._conn is not None:
                checkpoints._conn.close()
            checkpoints._thread.shutdown(wait=False)
            raise
        checkpoints._frame_bytes = page_size + _FRAME_HEADER_BYTES
        checkpoints._task = asyncio.get_running_loop().create_task(
            checkpoints._run(), name="sqlite-checkpoints"
        )
        return checkpoints

    async def close(self) -> None:
        """Stop, after one last checkpoint (and sync) of what has been committed. Closing
        again does nothing (a vault stopped twice closes its database twice)."""
        if self._conn is None:
            return
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
            self._task = None
        try:
            # Queued behind a checkpoint the cancellation left running on the thread, and under
            # the write lock: a write already committing (an unsynced usage count) lands first.
            async with self._write_lock:
                await self._on_thread(self._checkpoint_and_sync)
        finally:
            conn, self._conn = self._conn, None
            if conn is not None:
                await self._on_thread(conn.close)
            self._thread.shutdown(wait=False)

    @property
    def next_commit_may_sync(self) -> bool:
        """Whether the next commit may start the WAL over, and so sync its header: while a
        checkpoint runs, and after one that copied every frame, until `committed` is told.

        Only this vault's checkpoints are known here: another process's (an operator's) can
        also leave every frame copied.
        """
        return self._checkpointing or self._all_copied

    def committed(self) -> None:
        """A commit went through (and started the WAL over if it was to); unless a checkpoint
        is running meanwhile, the next one appends to the WAL and syncs nothing."""
        if not self._checkpointing:
            self._all_copied = False

    async def checkpoint(self) -> None:
        """One tick now: checkpoint and sync the WAL, and start it over if it is too long."""
        self._checkpointing = True
        self._all_copied = True  # until the checkpoint tells otherwise (it may fail half-way)
        try:
            wal_bytes, self._all_copied = await self._on_thread(self._checkpoint_and_sync)
            if wal_bytes > self._restart_bytes:
                await self._restart_if_due(wal_bytes)
        finally:
            self._checkpointing = False

    async def _restart_if_due(self, wal_bytes: int) -> None:
        if self._ticks_to_restart > 0:
            self._ticks_to_restart -= 1
            return
        started = time.monotonic()
        async with self._write_lock:
            done = await self._on_thread(self._restart)
        self._all_copied = True  # or nearly: the next commit may start the WAL over
        if done:
            self._restart_backoff = 1
        else:
            self._ticks_to_restart = self._restart_backoff
            self._restart_backoff = min(2 * self._restart_backoff, _MAX_RESTART_BACKOFF)
        # What the vault's writes waited for: the operator's view of this rare stall.
        _log.log(
            logging.DEBUG if done else logging.WARNING,
            "WAL started over" if done else "WAL not started over: a reader or writer held it",
            extra={
                "fields": {
                    "wal_bytes": wal_bytes,
                    "writes_waited_ms": round((time.monotonic() - started) * 1000, 1),
                }
            },
        )

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.checkpoint()
            except Exception as err:  # the next interval tries again
                _log.warning(
                    "WAL checkpoint failed",
                    extra={"fields": {"problem": type(err).__name__}},
                )

    def _checkpoint_and_sync(self) -> tuple[int, bool]:
        """A PASSIVE checkpoint, the WAL synced even where it stopped short; the bytes of WAL
        written since it last started over, and whether every frame was copied (on the
        thread)."""
        if self._conn is None:
            return 0, True
        row = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        busy, wal_frames, copied = (int(v) for v in row)
        if busy or copied < wal_frames:
            self._sync_wal()
        return wal_frames * self._frame_bytes, copied >= wal_frames

    def _restart(self) -> bool:
        """A RESTART checkpoint: every frame copied, and the next commit starts the WAL over
        (on the thread, with the write lock held). False if a reader or another process's
        writer kept it from finishing within the busy timeout (the next tick tries again)."""
        if self._conn is None:
            return False
        busy = self._conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()[0]
        return not busy

    def _sync_wal(self) -> None:
        # SQLite holds no lock on the WAL file itself (its locks are on the database and the
        # shared-memory file), so opening and closing it here releases none of them.
        try:
            fd = os.open(self._wal, os.O_RDONLY)
        except FileNotFoundError:
            return  # no WAL: nothing committed is outside the database file
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)

    async def _on_thread(self, work: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, work)
