"""Work that grows with one user's data, kept off the event loop and bounded per user.

The vault serves every user from one event loop. Opening and presenting a whole credential map
or every provider of a user is CPU work proportional to what that user stores (decryption,
JSON, masking, building the response message): done on the loop, one user's large reads stall
every other user's `Resolve` meanwhile (issue 14). So a batch above a small size runs on a
worker thread, together with building its response, and each user has at most one such batch
under way: a user who sends many large reads at once waits for their own earlier ones, and no
one user can keep several workers busy against everyone else's requests (all threads of the
process share the interpreter lock with the loop).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# Stored bytes of a batch handled right on the event loop: below this, a hop to a thread and
# the fight for the interpreter lock cost others more than it saves. Measured under a big user's
# load (tests/vault/test_resolve_isolation.py): with 64 KiB, the other user's loaded p90 Resolve
# was about 11 ms against 5-6.5 ms with such batches on the loop. 1 MiB is the default bound of
# a user's providers (VAULT_MAX_PROVIDER_BYTES), so at the default limits a provider list stays
# on the loop and only what larger limits allow goes to a thread.
INLINE_BATCH_BYTES = 1024 * 1024


class BulkReads:
    """Runs a user's large batches on worker threads, one at a time per user."""

    def __init__(self) -> None:
        self._per_user: dict[str, tuple[asyncio.Lock, int]] = {}

    def __repr__(self) -> str:
        return f"BulkReads(users_waiting={len(self._per_user)})"

    async def run(self, user_id: str, stored_bytes: int, work: Callable[[], T]) -> T:
        """`work()`, right here if `stored_bytes` is small, else on a worker thread once the
        user's earlier large batches are done."""
        if stored_bytes <= INLINE_BATCH_BYTES:
            return work()
        lock, users = self._per_user.get(user_id) or (asyncio.Lock(), 0)
        self._per_user[user_id] = (lock, users + 1)
        try:
            async with lock:
                return await asyncio.to_thread(work)
        finally:
            lock, users = self._per_user[user_id]
            if users == 1:
                del self._per_user[user_id]
            else:
                self._per_user[user_id] = (lock, users - 1)
