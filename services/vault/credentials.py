"""Users' credential maps: validation, encryption and storage of `key -> value` pairs.

Values are sealed with the user's data key and bound to their credential key by the AAD.
Every change, every read of values and every failed one is audited, with key names only: a
replace-all records which keys it added, changed and removed (`audit.map_changes`), a delete-all
which keys it deleted, a read which keys it handed out (before handing them out: a read that
cannot be audited returns nothing). A map's size is bounded
(`user_limits`; checked by the store in the write transaction), its number of keys is not.

A credential may be bound to hosts (SPEC 2.9, `credential_hosts`): its value is then sealed
for them too, so a hosts column changed without the keyring fails to open. Such a value is
refused with a logged integrity error and never used. Replacing a value keeps its binding (the
stored binding is checked by opening the old value first); replace-all keeps the bindings of the
keys that stay; deleting a key drops its binding.

Decrypting is CPU work on the event loop's thread unless moved: a few values are opened right
there, a larger batch (a whole map) on a worker thread, paced and one at a time per user,
together with building the response that holds them (`BulkReads`), so that one user's large map
does not hold up every other request meanwhile.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from typing import Protocol, TypeVar

from services.common.credential_rules import (
    KEY_PATTERN,
    describe,
    validate_credentials,
    validate_key,
    validate_value,
)
from services.common.errors import Unavailable
from services.common.host_patterns import patterns_from_json
from services.vault.audit import audit_failures, audit_record
from services.vault.bulk_reads import BulkReads, Pace
from services.vault.envelope import Envelope, Opener
from services.vault.errors import CredentialNotFound, DecryptionFailed
from services.vault.row_seals import CREDENTIAL_ROW, report_integrity_error
from services.vault.store import (
    UNBOUND_HOSTS,
    AuditSink,
    CredentialStore,
    StoredCredential,
    hosts_binding,
)
from services.vault.validation import validate_user_id

T = TypeVar("T")

# Writes retried when a key's binding changes between the read and the write.
WRITE_ATTEMPTS = 5


def open_credential(opener: Opener, key: str, stored: StoredCredential) -> str:
    """Open one stored value with its binding; refuse (logged, never used) if it fails."""
    try:
        return opener.open(key, stored.blob, stored.binding)
    except DecryptionFailed:
        report_integrity_error(CREDENTIAL_ROW, key, opener.user_id)
        raise DecryptionFailed(
            f"credential {describe(key)} failed its integrity check (its value or bound hosts "
            "were changed outside the vault) and is not used"
        ) from None


def stored_hosts(stored: StoredCredential) -> tuple[str, ...]:
    """The bound hosts of a stored credential (after its value opened: then they are sound)."""
    return patterns_from_json(stored.hosts) if stored.hosts != UNBOUND_HOSTS else ()


def _opened(opener: Opener, blobs: Mapping[str, StoredCredential]) -> Iterator[tuple[str, str]]:
    """The values opened one by one as they are asked for, with their keys."""
    for key, stored in blobs.items():
        yield key, open_credential(opener, key, stored)


def _changed_meanwhile(what: str) -> Unavailable:
    return Unavailable(f"{what} kept changing meanwhile; try again")


def _holds(opener: Opener, key: str, stored: StoredCredential, value: str) -> bool:
    """Whether a stored value is `value` (False if it does not open with its binding)."""
    try:
        return hmac.compare_digest(
            opener.open(key, stored.blob, stored.binding).encode(), value.encode()
        )
    except DecryptionFailed:
        return False


class AuditedCredentialStore(CredentialStore, AuditSink, Protocol):
    pass


class CredentialMaps:
    """The domain operations behind CredentialService."""

    def __init__(
        self, store: AuditedCredentialStore, envelope: Envelope, bulk: BulkReads | None = None
    ) -> None:
        self._store = store
        self._envelope = envelope
        self._bulk = bulk or BulkReads()

    def __repr__(self) -> str:
        return f"CredentialMaps(envelope={self._envelope!r})"

    async def _open_all(
        self,
        user_id: str,
        blobs: Mapping[str, StoredCredential],
        present: Callable[[Iterable[tuple[str, str]]], T],
    ) -> T:
        opener = await self._envelope.opener_for(user_id) if blobs else None

        def opened(pace: Pace) -> T:
            return present(pace(_opened(opener, blobs)) if opener else iter(()))

        size = sum(len(stored.blob) for stored in blobs.values())
        return await self._bulk.run(user_id, size, opened)

    async def get_all(
        self, caller: str, user_id: str, present: Callable[[Iterable[tuple[str, str]]], T]
    ) -> T:
        """The user's whole map, decrypted (empty for an unknown user), as `present` makes it
        (e.g. a serialized response) from the pairs it is handed one at a time: a large map is
        decrypted and presented on a worker thread, paced (`BulkReads`)."""
        validate_user_id(user_id)
        record = audit_record(caller, user_id, "credentials.get_all")
        async with audit_failures(self._store, record):
            blobs = await self._store.get_credentials(user_id)
            presented = await self._open_all(user_id, blobs, present)
            await self._store.append_audit(replace(record, keys=tuple(sorted(blobs))))
        return presented

    async def get(self, caller: str, user_id: str, key: str) -> str:
        validate_user_id(user_id)
        names = [key] if KEY_PATTERN.fullmatch(key) else []
        record = audit_record(caller, user_id, "credentials.get", names)
        async with audit_failures(self._store, record):
            validate_key(key)
            blobs = await self._store.get_credentials_named(user_id, [key])
            if key not in blobs:
                raise CredentialNotFound(f"credential {describe(key)} not found")
            value = open_credential(await self._envelope.opener_for(user_id), key, blobs[key])
            await self._store.append_audit(record)
        return value

    async def values_with_hosts(
        self, user_id: str, keys: Iterable[str]
    ) -> tuple[dict[str, str], dict[str, tuple[str, ...]], list[str]]:
        """Decrypted values of those `keys` that exist, the bound hosts of those of them that are
        bound, and the sorted names of the keys that do not exist."""
        wanted = list(dict.fromkeys(keys))
        for key in wanted:
            validate_key(key)
        blobs = await self._store.get_credentials_named(user_id, wanted)
        values = await self._open_all(user_id, blobs, dict)
        hosts = {key: stored_hosts(stored) for key, stored in blobs.items() if stored.binding}
        return values, hosts, sorted(k for k in wanted if k not in values)

    async def _verified_bindings(self, user_id: str, keys: list[str]) -> dict[str, str]:
        """The stored hosts of those of `keys` that are bound, each checked by opening its
        value: a binding changed outside the vault is refused, never carried over."""
        stored = await self._store.get_credentials_named(user_id, keys) if keys else {}
        bound = {key: row for key, row in stored.items() if row.binding or row.sealed_bound}
        if bound:
            opener = await self._envelope.opener_for(user_id)
            for key, row in bound.items():
                open_credential(opener, key, row)
        return {key: row.hosts for key, row in bound.items() if row.binding}

    async def replace_all(
        self, caller: str, user_id: str, credentials: Mapping[str, str]
    ) -> dict[str, str]:
        """Make the map exactly `credentials` (atomically); the map as stored."""
        validate_user_id(user_id)
        valid_names = sorted(k for k in credentials if KEY_PATTERN.fullmatch(k))
        record = audit_record(caller, user_id, "credentials.replace", valid_names)
        async with audit_failures(self._store, record):
            validate_credentials(credentials)
            for _ in range(WRITE_ATTEMPTS):
                # Keys that stay keep their binding: their new values are sealed for it.
                kept = await self._verified_bindings(user_id, sorted(credentials))
                blobs = await self._sealed_map(user_id, credentials, kept)
                if await self._store.replace_credentials(user_id, blobs, audit=record, hosts=kept):
                    break
            else:
                raise _changed_meanwhile("the credential map")
        return dict(sorted(credentials.items()))

    async def _sealed_map(
        self, user_id: str, credentials: Mapping[str, str], kept: Mapping[str, str]
    ) -> dict[str, bytes]:
        """The new map sealed (a kept key's value for its binding), keeping the stored blob of
        each value that does not change, so that the store can tell changed keys from unchanged
        ones for the audit record. A kept binding is the stored one (the store refuses the
        write if it changed meanwhile), so a kept blob stays sealed for it."""
        stored = await self._store.get_credentials(user_id)
        opener = await self._envelope.opener_for(user_id) if stored else None
        blobs = {}
        for key, value in sorted(credentials.items()):
            previous = stored.get(key)
            if opener is not None and previous is not None and _holds(opener, key, previous, value):
                blobs[key] = previous.blob
            else:
                blobs[key] = await self._envelope.seal(user_id, key, value, _binding(kept, key))
        return blobs

    async def put(self, caller: str, user_id: str, key: str, value: str) -> None:
        """Create or update one pair."""
        validate_user_id(user_id)
        names = [key] if KEY_PATTERN.fullmatch(key) else []
        record = audit_record(caller, user_id, "credentials.put", names)
        async with audit_failures(self._store, record):
            validate_key(key)
            validate_value(key, value)
            for _ in range(WRITE_ATTEMPTS):
                # A replaced value keeps the key's binding.
                kept = await self._verified_bindings(user_id, [key])
                blob = await self._envelope.seal(user_id, key, value, _binding(kept, key))
                hosts = kept.get(key, UNBOUND_HOSTS)
                if await self._store.put_credential(user_id, key, blob, audit=record, hosts=hosts):
                    break
            else:
                raise _changed_meanwhile(f"credential {describe(key)}")

    async def delete(self, caller: str, user_id: str, key: str) -> None:
        """Delete one pair; CredentialNotFound if absent."""
        validate_user_id(user_id)
        names = [key] if KEY_PATTERN.fullmatch(key) else []
        record = audit_record(caller, user_id, "credentials.delete", names)
        async with audit_failures(self._store, record):
            validate_key(key)
            if not await self._store.delete_credential(user_id, key, audit=record):
                raise CredentialNotFound(f"credential {describe(key)} not found")

    async def delete_all(self, caller: str, user_id: str) -> int:
        """Delete the whole map; how many pairs were deleted."""
        validate_user_id(user_id)
        record = audit_record(caller, user_id, "credentials.delete_all")
        return await self._store.delete_credentials(user_id, audit=record)


def _binding(kept: Mapping[str, str], key: str) -> str:
    return hosts_binding(kept.get(key, UNBOUND_HOSTS))
