"""Envelope encryption: one data key (DEK) per user, wrapped by a master key (SPEC 4.3).

A user's values are sealed with their DEK; the DEK is stored sealed ("wrapped") under the
primary master key (KEK) of the moment. Rotating master keys re-wraps DEKs only; values stay
as they are.

Unwrapped DEKs are cached in memory (bounded LRU): they are keys, not credential values, and
each unwrap would otherwise cost a database read and an AES operation per request. Plaintext
credential values are never cached.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.vault import crypto
from services.vault.errors import DecryptionFailed, StartupRefused
from services.vault.keyring import KeyringSource
from services.vault.metrics import DATA_KEY_BLOB, DECRYPT_ERRORS, VALUE_BLOB
from services.vault.store import DataKeyStore, WrappedDataKey

_CHECK_PLAINTEXT = b"aicreds master key check v1"
_CHECK_USER = ""


@dataclass(frozen=True)
class DataKey:
    """A user's unwrapped data key, with its AES-GCM cipher (set up once: see
    `crypto.open_sealed_with`)."""

    user_id: str
    dek_id: str
    key: bytes = field(repr=False)
    cipher: AESGCM = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "cipher", AESGCM(self.key))


def _dek_purpose(dek_id: str) -> str:
    return f"dek:{dek_id}"


def _check_purpose(kek_id: str) -> str:
    return f"master-key-check:{kek_id}"


def wrap_data_key(kek_id: str, kek: bytes, dek: DataKey) -> WrappedDataKey:
    """Seal a DEK under a master key (also used by the operator's rewrap)."""
    blob = crypto.seal(kek, kek_id, dek.key, user_id=dek.user_id, purpose=_dek_purpose(dek.dek_id))
    return WrappedDataKey(dek.user_id, dek.dek_id, kek_id, blob)


def unwrap_data_key(keyring: KeyringSource, wrapped: WrappedDataKey) -> DataKey:
    """Open a wrapped DEK with the master key its blob names (a failure is counted)."""
    try:
        blob = crypto.SealedBlob.parse(wrapped.blob)
        kek = keyring.key(blob.key_id)
        key = crypto.open_sealed(
            kek, blob, user_id=wrapped.user_id, purpose=_dek_purpose(wrapped.dek_id)
        )
    except DecryptionFailed:
        DECRYPT_ERRORS.labels(blob=DATA_KEY_BLOB).inc()
        raise
    return DataKey(wrapped.user_id, wrapped.dek_id, key)


class Envelope:
    """Seals and opens a user's values with their DEK, creating the DEK on first write."""

    def __init__(self, store: DataKeyStore, keyring: KeyringSource, cache_size: int = 10_000):
        self._store = store
        self._keyring = keyring
        self._cache: OrderedDict[str, DataKey] = OrderedDict()
        self._cache_size = cache_size

    def __repr__(self) -> str:
        return f"Envelope(keyring={self._keyring!r}, cached_data_keys={len(self._cache)})"

    @property
    def keyring(self) -> KeyringSource:
        return self._keyring

    def _remember(self, dek: DataKey) -> DataKey:
        self._cache[dek.user_id] = dek
        self._cache.move_to_end(dek.user_id)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return dek

    async def _existing_key(self, user_id: str) -> DataKey | None:
        cached = self._cached_key(user_id)
        if cached is not None:
            return cached
        wrapped = await self._store.get_data_key(user_id)
        if wrapped is None:
            return None
        return self._remember(unwrap_data_key(self._keyring, wrapped))

    def _cached_key(self, user_id: str) -> DataKey | None:
        cached = self._cache.get(user_id)
        if cached is not None:
            self._cache.move_to_end(user_id)
        return cached

    async def _key_for_write(self, user_id: str) -> DataKey:
        existing = await self._existing_key(user_id)
        if existing is not None:
            return existing
        kek_id, kek = self._keyring.primary()
        fresh = DataKey(user_id, "d" + secrets.token_hex(8), AESGCM.generate_key(bit_length=256))
        # A concurrent first write may have stored its DEK first; then that one is used.
        stored = await self._store.add_data_key(wrap_data_key(kek_id, kek, fresh))
        if stored.dek_id == fresh.dek_id:
            return self._remember(fresh)
        return self._remember(unwrap_data_key(self._keyring, stored))

    async def seal(self, user_id: str, purpose: str, plaintext: str, binding: str = "") -> bytes:
        """Encrypt `plaintext` for the user, bound to `purpose` (a credential key, ...) and,
        if not empty, to `binding` (a credential's bound hosts)."""
        dek = await self._key_for_write(user_id)
        return crypto.seal(
            dek.key,
            dek.dek_id,
            plaintext.encode("utf-8"),
            user_id=user_id,
            purpose=purpose,
            binding=binding,
        )

    async def open(self, user_id: str, purpose: str, blob: bytes, binding: str = "") -> str:
        """Decrypt a blob stored for the user under `purpose` (and `binding`);
        DecryptionFailed otherwise."""
        return _open_blob(await self._existing_key(user_id), user_id, purpose, blob, binding)

    async def opener_for(self, user_id: str) -> Opener:
        """Opens the user's blobs with their data key (read if not cached); the opener needs no
        I/O, so it can run on another thread."""
        return Opener(user_id, await self._existing_key(user_id))

    def opener(self, user_id: str, wrapped: WrappedDataKey | None) -> Opener:
        """Opens the user's blobs with their data key, read along with the blobs: `wrapped` is
        the user's wrapped data key as stored (unwrapped only when it is not cached)."""
        dek = self._cached_key(user_id)
        if dek is None and wrapped is not None:
            dek = self._remember(unwrap_data_key(self._keyring, wrapped))
        return Opener(user_id, dek)

    async def verify_master_keys(self) -> None:
        """At start: refuse a keyring that lacks a key in use or holds a wrong key.

        Each master key seals a known check blob the first time the vault sees it; a later
        start with a different key under the same id fails to open that blob.
        """
        keyring = self._keyring.current
        missing = sorted(await self._store.master_key_ids_in_use() - set(keyring.key_ids))
        if missing:
            raise StartupRefused(
                f"the database has data keys or row seals made with master key(s) {missing} that "
                "the keyring "
                "file does not hold; restore the keyring file that contains them"
            )
        checks = await self._store.get_master_key_checks()
        for kek_id in keyring.key_ids:
            kek = keyring.get(kek_id)
            assert kek is not None
            if kek_id in checks:
                try:
                    crypto.open_sealed(
                        kek,
                        crypto.SealedBlob.parse(checks[kek_id]),
                        user_id=_CHECK_USER,
                        purpose=_check_purpose(kek_id),
                    )
                except DecryptionFailed:
                    raise StartupRefused(
                        f"master key {kek_id!r} in the keyring file is not the key this database "
                        "was encrypted with; restore the right keyring file (a wrong key cannot "
                        "decrypt anything)"
                    ) from None
            else:
                blob = crypto.seal(
                    kek,
                    kek_id,
                    _CHECK_PLAINTEXT,
                    user_id=_CHECK_USER,
                    purpose=_check_purpose(kek_id),
                )
                await self._store.add_master_key_check(kek_id, blob)


class Opener:
    """Opens one user's blobs with a data key already at hand (no I/O); see `Envelope.opener`."""

    def __init__(self, user_id: str, dek: DataKey | None) -> None:
        self._user_id = user_id
        self._dek = dek

    def __repr__(self) -> str:
        return f"Opener(user_id={self._user_id!r})"

    @property
    def user_id(self) -> str:
        return self._user_id

    def open(self, purpose: str, blob: bytes, binding: str = "") -> str:
        """Decrypt a blob stored for the user under `purpose` (and `binding`);
        DecryptionFailed otherwise."""
        return _open_blob(self._dek, self._user_id, purpose, blob, binding)


def _open_blob(
    dek: DataKey | None, user_id: str, purpose: str, blob: bytes, binding: str = ""
) -> str:
    """Every user blob is opened here (a failure is counted)."""
    try:
        return _open_user_blob(dek, user_id, purpose, blob, binding)
    except DecryptionFailed:
        DECRYPT_ERRORS.labels(blob=VALUE_BLOB).inc()
        raise


def _open_user_blob(
    dek: DataKey | None, user_id: str, purpose: str, blob: bytes, binding: str
) -> str:
    sealed = crypto.SealedBlob.parse(blob)
    if dek is None or dek.dek_id != sealed.key_id:
        raise DecryptionFailed("stored blob was not sealed with this user's data key")
    plaintext = crypto.open_sealed_with(
        dek.cipher, sealed, user_id=user_id, purpose=purpose, binding=binding
    )
    try:
        return plaintext.decode("utf-8")
    except UnicodeDecodeError:
        raise DecryptionFailed("stored blob holds no text") from None
