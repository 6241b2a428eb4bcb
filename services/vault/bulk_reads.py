"""Work that grows with one user's data, kept off the event loop, paced and bounded per user.

The vault serves every user from one event loop. Opening and presenting a whole credential map
or every provider of a user is CPU work proportional to what that user stores (decryption,
JSON, masking, building and serializing the response): done on the loop, one user's large reads
stall every other user's `Resolve` meanwhile (issue 14). So a batch above a small size runs on a
worker thread, together with building its response, and each user has at most one such batch
under way: a user who sends many large reads at once waits for their own earlier ones. A batch
whose caller gives up (a deadline, a cancelled call) stops at its next item, and the user's
next batch starts only once it has: a thread cannot be cancelled, and without that wait short
deadlines would let one user keep every worker thread busy.

A thread off the loop is not enough on its own: every thread of the process shares the
interpreter lock with the loop, and a worker that never pauses holds it whenever the loop does
not, so each step of everyone else's requests first waits for the worker to hand it over, and
the two compete for the CPU. So a batch is paced (`Pace`): it works through its items in
slices of about `SLICE_S` and after each one sleeps, releasing the lock, long enough to run
at most `BULK_SHARE` of the time. Measured with test_resolve_isolation.py's big user (500
providers, lists of 30 MiB among 40 calls/s, 6 in flight; 2 shared cores, load average 4-11),
another user's median `Resolve` loaded/alone: with an unpaced worker 3.6-4.7x on SQLite and
2.2-12.8x on PostgreSQL (lists only); at a share of 1/4, 0.9-4.8x over 20 runs, 3 of them at 3x
or more; at 1/8, 0.9-1.8x over 20 runs. The price is the big user's alone: one list of 30 MiB
takes 1.8-3.6 s instead of 0.5-0.8 s (within the gateway's 5 s deadline), and their lists
queue behind each other.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol, TypeVar

T = TypeVar("T")
Item = TypeVar("Item")

# Stored bytes of a batch handled right on the event loop: below this, a hop to a thread and
# the fight for the interpreter lock cost others more than it saves. Measured under a big user's
# load (tests/vault/test_resolve_isolation.py): with 64 KiB, the other user's loaded p90 Resolve
# was about 11 ms against 5-6.5 ms with such batches on the loop. 1 MiB is the default bound of
# a user's providers (VAULT_MAX_PROVIDER_BYTES), so at the default limits a provider list stays
# on the loop and only what larger limits allow goes to a thread.
INLINE_BATCH_BYTES = 1024 * 1024

# The share of the time a batch on a worker thread runs, and how long it runs between pauses.
# A slice of 2 ms is a few items of the largest kind (a provider of 64 KiB takes about 0.5 ms
# to open, mask and serialize); the pause after it (14 ms at 1/8) lets the loop get through
# several requests without waiting for the interpreter lock.
BULK_SHARE = 0.125
SLICE_S = 0.002


class Pace(Protocol):
    """Hands a batch's items through, pausing between them as the batch's place requires."""

    def __call__(self, items: Iterable[Item]) -> Iterator[Item]: ...


def unpaced(items: Iterable[Item]) -> Iterator[Item]:
    """A batch on the event loop: small, so run straight through (a pause would stall all)."""
    return iter(items)


class BatchAbandoned(Exception):
    """Raised in a batch's thread at its next item once its caller has given up."""


def paced(
    items: Iterable[Item],
    *,
    abandoned: threading.Event | None = None,
    clock: Callable[[], float] = time.perf_counter,
    sleep: Callable[[float], object] | None = None,
) -> Iterator[Item]:
    """`items`, with pauses between them so that taking them, and whatever the consumer does
    with each before asking for the next, runs at most `BULK_SHARE` of the time (worker threads
    only: the pause is a sleep). No pause after the last item.

    A pause ends early once `abandoned` is set: it lasts as long as the slice before it ran,
    several times over, which a busy machine can stretch to a good part of a second, and the
    user's next batch waits for this one to stop.

    Raises:
        BatchAbandoned: at the next item once `abandoned` is set.
    """
    if sleep is None:
        sleep = abandoned.wait if abandoned is not None else time.sleep
    rest_per_run = (1 - BULK_SHARE) / BULK_SHARE
    start = clock()
    for item in items:
        ran = clock() - start
        if ran >= SLICE_S:
            sleep(ran * rest_per_run)
            start = clock()
        if abandoned is not None and abandoned.is_set():
            raise BatchAbandoned
        yield item


class BulkReads:
    """Runs a user's large batches on worker threads, paced, one at a time per user."""

    def __init__(self) -> None:
        self._per_user: dict[str, tuple[asyncio.Lock, int]] = {}

    def __repr__(self) -> str:
        return f"BulkReads(users_waiting={len(self._per_user)})"

    async def run(self, user_id: str, stored_bytes: int, work: Callable[[Pace], T]) -> T:
        """`work(unpaced)` right here if `stored_bytes` is small, else `work(paced)` on a worker
        thread once the user's earlier large batches are done. `work` passes the items it
        works through (providers, credentials) through the pace it is given."""
        if stored_bytes <= INLINE_BATCH_BYTES:
            return work(unpaced)
        lock, users = self._per_user.get(user_id) or (asyncio.Lock(), 0)
        self._per_user[user_id] = (lock, users + 1)
        try:
            async with lock:
                return await _on_a_thread(work)
        finally:
            lock, users = self._per_user[user_id]
            if users == 1:
                del self._per_user[user_id]
            else:
                self._per_user[user_id] = (lock, users - 1)


async def _on_a_thread(work: Callable[[Pace], T]) -> T:
    """`work(paced)` on a worker thread; if the caller is cancelled meanwhile, the work is told
    to stop and awaited to its end before the cancellation goes on."""
    abandoned = threading.Event()

    def pace(items: Iterable[Item]) -> Iterator[Item]:
        return paced(items, abandoned=abandoned)

    thread = asyncio.ensure_future(asyncio.to_thread(work, pace))
    try:
        return await asyncio.shield(thread)
    except asyncio.CancelledError:
        abandoned.set()
        await asyncio.wait([thread])  # a second cancellation here is the caller's to have
        if not thread.cancelled():
            thread.exception()  # retrieved: BatchAbandoned, or what the work raised before
        raise
