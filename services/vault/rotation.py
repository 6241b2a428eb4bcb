"""Master-key rotation (SPEC 4.3): add a key, re-wrap data keys under it, retire the old one.

Only users' data keys (DEKs) are sealed under a master key (KEK); credential values and provider
headers are sealed under DEKs and name the DEK in their blob. So rotating a KEK touches the
`data_keys` table only, and a KEK is unused once no DEK row names it.

- `add_master_key` writes a new random key into the keyring file and makes it primary (the file
  is replaced atomically, mode 0600, under a lock file so two operators cannot interleave).
  A running vault sees the file change the next time it wraps a new DEK and reloads it when it
  meets a DEK wrapped under a key it does not hold yet.
- `rewrap_data_keys` re-wraps, batch by batch, every DEK not under the primary. Each batch is one
  transaction; a row that cannot be opened, or that changed meanwhile, aborts the run and rolls
  its batch back, so a batch is all or nothing. Batches already committed stay committed: the
  command is idempotent and can be re-run after a crash or a kill.
- `retire_master_key` removes a key from the file, refusing the primary and any key that still
  wraps a DEK or seals a token or session row (`resealing.reseal_rows`, run by `keys rewrap`
  after the DEKs, moves those seals to the primary). Its id is never given to a new key.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import re
import secrets
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from services.common.callers import write_private_file
from services.common.errors import AicredsError, FailedPrecondition, NotFound
from services.vault.crypto import KEY_SIZE
from services.vault.envelope import unwrap_data_key, wrap_data_key
from services.vault.keyring import Keyring, KeyringSource
from services.vault.store import WrappedDataKey

DEFAULT_BATCH_SIZE = 100
_KEY_ID = re.compile(r"k(\d{1,9})")


class RotationStore(Protocol):
    """What rotation needs from storage (SQLite: `services.vault.store.rotation`)."""

    async def data_keys_not_under(self, kek_id: str, limit: int) -> list[WrappedDataKey]:
        """Up to `limit` wrapped DEKs whose master key is not `kek_id`, in a stable order."""

    async def replace_wrapped_data_keys(
        self, pairs: Sequence[tuple[WrappedDataKey, WrappedDataKey]]
    ) -> None:
        """Replace each old wrapped DEK by its new form in one transaction; raise (rolling
        back everything) if any old row is no longer as read."""

    async def data_key_counts(self) -> dict[str, int]:
        """Master key id -> how many DEKs it wraps."""

    async def master_key_check_ids(self) -> set[str]:
        """Ids of every master key the database has seen (retired ones included): never reused."""

    async def row_seal_counts(self) -> dict[str, int]:
        """Master key id -> how many token and session rows are sealed under it."""


class RewrapFailed(FailedPrecondition):
    reason = "rewrap_failed"


class KeyInUse(FailedPrecondition):
    reason = "master_key_in_use"


def next_key_id(used: Iterable[str]) -> str:
    """`k<N+1>` where N is the highest number among used ids of the form `k<N>`."""
    numbers = [int(m.group(1)) for kid in used if (m := _KEY_ID.fullmatch(kid))]
    return f"k{max(numbers, default=0) + 1}"


@contextmanager
def keyring_file_lock(path: Path) -> Iterator[None]:
    """Exclusive lock for a read-modify-write of the keyring file (a `.lock` file beside it)."""
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _keys_of(keyring: Keyring) -> dict[str, bytes]:
    keys = {}
    for kid in keyring.key_ids:
        key = keyring.get(kid)
        assert key is not None
        keys[kid] = key
    return keys


def add_master_key(path: Path, *, never_reuse: Iterable[str] = ()) -> Keyring:
    """Add a random master key to the keyring file and make it primary; the new keyring."""
    with keyring_file_lock(path):
        current = Keyring.load(path)
        keys = _keys_of(current)
        new_id = next_key_id([*keys, *never_reuse])
        keys[new_id] = secrets.token_bytes(KEY_SIZE)
        updated = Keyring(new_id, keys, current.pepper)
        write_private_file(path, updated.to_json())
    return updated


@dataclass(frozen=True)
class RewrapProgress:
    """How far a rewrap got."""

    primary_id: str
    batches: int
    rewrapped: int
    finished: bool


async def rewrap_data_keys(
    store: RotationStore,
    keyring: KeyringSource,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_batches: int | None = None,
    pause: float = 0.0,
    on_batch: Callable[[RewrapProgress], None] | None = None,
) -> RewrapProgress:
    """Re-wrap every DEK not under the primary master key, one transaction per batch.

    Args:
        batch_size: DEKs per transaction.
        max_batches: stop after this many batches (None: until done); run again to go on.
        pause: seconds to wait between batches, to spare a busy live vault.
        on_batch: called after each committed batch.

    Raises:
        RewrapFailed: a DEK could not be opened or changed meanwhile; its batch was rolled
            back, earlier batches stay committed, and nothing is lost either way.
    """
    if batch_size < 1:
        raise ValueError("batch size must be at least 1")
    primary_id, primary = keyring.primary()
    batches = rewrapped = 0
    while max_batches is None or batches < max_batches:
        rows = await store.data_keys_not_under(primary_id, batch_size)
        if not rows:
            return RewrapProgress(primary_id, batches, rewrapped, finished=True)
        pairs = []
        for old in rows:
            try:
                dek = unwrap_data_key(keyring, old)
            except AicredsError as err:
                raise RewrapFailed(
                    f"the data key of user {old.user_id!r} (under master key {old.kek_id!r}) "
                    f"could not be opened ({err.reason}); its batch was not changed, "
                    f"{rewrapped} data keys were re-wrapped before it"
                ) from None
            pairs.append((old, wrap_data_key(primary_id, primary, dek)))
        try:
            await store.replace_wrapped_data_keys(pairs)
        except Exception as err:
            raise RewrapFailed(
                f"a batch of {len(pairs)} data keys could not be written "
                f"({type(err).__name__}); it was rolled back, {rewrapped} data keys were "
                "re-wrapped before it; run the rewrap again"
            ) from None
        batches += 1
        rewrapped += len(pairs)
        if on_batch is not None:
            on_batch(RewrapProgress(primary_id, batches, rewrapped, finished=False))
        if pause > 0:
            await asyncio.sleep(pause)
    remaining = await store.data_keys_not_under(primary_id, 1)
    return RewrapProgress(primary_id, batches, rewrapped, finished=not remaining)


async def retire_master_key(path: Path, store: RotationStore, key_id: str) -> Keyring:
    """Remove a master key from the keyring file; the new keyring.

    Raises:
        NotFound: the keyring has no such key.
        KeyInUse: it is the primary, or it still wraps data keys (run the rewrap first).
    """
    with keyring_file_lock(path):
        current = Keyring.load(path)
        if current.get(key_id) is None:
            raise NotFound(
                f"master key {key_id!r} is not in the keyring (keys: {current.key_ids})",
                reason="unknown_master_key",
            )
        if key_id == current.primary_id:
            raise KeyInUse(f"master key {key_id!r} is the primary; add a new key first (keys add)")
        in_use = (await store.data_key_counts()).get(key_id, 0)
        in_use += (await store.row_seal_counts()).get(key_id, 0)
        if in_use:
            raise KeyInUse(
                f"master key {key_id!r} still wraps {in_use} data key(s) or row seal(s); run "
                "`keys rewrap` "
                "until it reports none left, then retire it"
            )
        keys = _keys_of(current)
        del keys[key_id]
        updated = Keyring(current.primary_id, keys, current.pepper)
        write_private_file(path, updated.to_json())
    # The key's check blob stays: it keeps the id from being reused by `add_master_key`, and a
    # restored keyring holding the old key under that id is still recognised at start.
    return updated
