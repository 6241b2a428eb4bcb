"""The master-key keyring: loading, validating, generating (development) and reloading.

The keyring file (mode 0600) holds the key-encryption keys (KEKs) and the token pepper:

    {"version": 1, "primary": "k1", "keys": {"k1": "<base64 of 32 bytes>"},
     "pepper": "<base64 of 32 bytes>"}

New data keys are wrapped under the primary KEK. Older KEKs stay so that data keys wrapped
under them still open until a rewrap moves them to the primary. The pepper keys the HMAC of
API tokens and sessions. Nothing here ever puts key material into a message or a repr.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from services.common.callers import write_private_file
from services.vault.crypto import KEY_SIZE
from services.vault.errors import StartupRefused, UnknownMasterKey

KEYRING_VERSION = 1
_log = logging.getLogger("aicreds.vault.keyring")


class Keyring:
    """A validated set of master keys with one primary, and the token pepper."""

    def __init__(self, primary_id: str, keys: Mapping[str, bytes], pepper: bytes) -> None:
        if primary_id not in keys:
            raise ValueError(f"primary master key {primary_id!r} is not in the keyring")
        self.primary_id = primary_id
        self._keys = dict(keys)
        self._pepper = pepper

    def __repr__(self) -> str:
        return f"Keyring(primary={self.primary_id!r}, key_ids={sorted(self._keys)!r})"

    @property
    def key_ids(self) -> list[str]:
        return sorted(self._keys)

    @property
    def primary_key(self) -> bytes:
        return self._keys[self.primary_id]

    @property
    def pepper(self) -> bytes:
        """The server pepper for token and session HMACs."""
        return self._pepper

    def get(self, key_id: str) -> bytes | None:
        return self._keys.get(key_id)

    def to_json(self) -> str:
        """The file form (holds key material: write it only with `write_private_file`)."""
        data = {
            "version": KEYRING_VERSION,
            "primary": self.primary_id,
            "keys": {kid: base64.b64encode(k).decode("ascii") for kid, k in self._keys.items()},
            "pepper": base64.b64encode(self._pepper).decode("ascii"),
        }
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def generate(cls, primary_id: str = "k1") -> Keyring:
        """A fresh keyring with one random key and a random pepper."""
        return cls(primary_id, {primary_id: secrets.token_bytes(KEY_SIZE)}, secrets.token_bytes(32))

    @classmethod
    def load(cls, path: Path) -> Keyring:
        """Read and validate a keyring file; StartupRefused says what is wrong and what to do."""
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            raise StartupRefused(
                f"master key file {path} does not exist: restore it from your secret store, point "
                "VAULT_KEYRING_FILE at it, or for local development only set "
                "VAULT_GENERATE_DEV_KEY=true to generate one"
            ) from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise StartupRefused(
                f"master key file {path} is readable or writable by group or others; "
                f"run: chmod 600 {path}"
            )
        try:
            data = json.loads(path.read_text("utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            raise StartupRefused(f"master key file {path} is not valid JSON") from None
        return cls._from_data(data, path)

    @classmethod
    def _from_data(cls, data: Any, path: Path) -> Keyring:
        if not isinstance(data, dict) or data.get("version") != KEYRING_VERSION:
            raise StartupRefused(
                f'master key file {path} must hold {{"version": {KEYRING_VERSION}, "primary": '
                '..., "keys": {...}, "pepper": ...}'
            )
        raw_keys = data.get("keys")
        if not isinstance(raw_keys, dict) or not raw_keys:
            raise StartupRefused(f"master key file {path} has no keys")
        keys = {kid: _decode_key(raw, f"master key {kid!r}", path) for kid, raw in raw_keys.items()}
        for kid in keys:
            if not isinstance(kid, str) or not kid.isascii() or not 1 <= len(kid) <= 64:
                raise StartupRefused(f"master key file {path}: key ids must be 1-64 ASCII chars")
        primary = data.get("primary")
        if not isinstance(primary, str) or primary not in keys:
            raise StartupRefused(
                f"master key file {path} names primary {primary!r}, which is not among its keys "
                f'{sorted(keys)!r}; set "primary" to one of them'
            )
        pepper = _decode_key(data.get("pepper"), "pepper", path)
        return cls(primary, keys, pepper)


def _decode_key(raw: object, what: str, path: Path) -> bytes:
    if not isinstance(raw, str):
        raise StartupRefused(f"{what} in {path} is missing; it must be base64 of 32 random bytes")
    try:
        key = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise StartupRefused(f"{what} in {path} is not valid base64") from None
    if len(key) < KEY_SIZE:
        raise StartupRefused(
            f"{what} in {path} is {len(key)} bytes, too short: AES-256 needs 32 random bytes "
            "(generate with: python -c 'import base64,os;print(base64.b64encode(os.urandom(32))"
            ".decode())')"
        )
    if len(key) > KEY_SIZE:
        raise StartupRefused(f"{what} in {path} is {len(key)} bytes; it must be exactly 32")
    if not any(key):
        raise StartupRefused(f"{what} in {path} is all zeros; replace it with 32 random bytes")
    return key


def load_or_generate(path: Path, *, generate_dev_key: bool) -> Keyring:
    """Load the keyring; with `generate_dev_key`, first create a missing file (mode 0600)."""
    if generate_dev_key and not path.exists():
        write_private_file(path, Keyring.generate().to_json())
        _log.warning(
            "GENERATED A DEVELOPMENT MASTER KEY. Do not use it in production: anyone with this "
            "file can decrypt every credential. Keep it safe and backed up, or the data is lost.",
            extra={"fields": {"keyring_file": str(path)}},
        )
    return Keyring.load(path)


class KeyringSource:
    """The keyring of a running vault, re-read from its file when the file changes.

    An operator command in another process may add a key (making it primary) and rewrap data
    keys under it; the running vault picks the change up when it next wraps a data key (file
    modification time) or when it meets a blob naming a key it does not hold (one reload).
    """

    def __init__(self, path: Path, keyring: Keyring) -> None:
        self._path = path
        self._keyring = keyring
        self._stamp = self._file_stamp()

    def __repr__(self) -> str:
        return f"KeyringSource(path={str(self._path)!r}, keyring={self._keyring!r})"

    @property
    def current(self) -> Keyring:
        return self._keyring

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self._path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def reload(self) -> None:
        """Re-read the file; keep the loaded keyring if the file is now unreadable or invalid."""
        stamp = self._file_stamp()
        try:
            self._keyring = Keyring.load(self._path)
        except StartupRefused as err:
            _log.error(
                "keyring reload failed; keeping the loaded keys",
                extra={"fields": {"keyring_file": str(self._path), "problem": str(err)}},
            )
        self._stamp = stamp

    def primary(self) -> tuple[str, bytes]:
        """The primary key id and key, reloading first if the file changed."""
        if self._file_stamp() != self._stamp:
            self.reload()
        return self._keyring.primary_id, self._keyring.primary_key

    def key(self, key_id: str) -> bytes:
        """The master key `key_id`; reloads once when absent, then UnknownMasterKey."""
        key = self._keyring.get(key_id)
        if key is None:
            self.reload()
            key = self._keyring.get(key_id)
        if key is None:
            raise UnknownMasterKey(f"master key {key_id!r} is not in the keyring")
        return key
