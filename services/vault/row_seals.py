"""Integrity seals of the rows that decide who may read what (SPEC 4.7, issue 15 item 2).

A token or session row is not secret, but its user, scopes, expiry, revocation and lineage
decide who is let in. Each such row carries a seal: HMAC-SHA256 over a canonical encoding of
those fields, keyed by a key derived (HKDF-SHA256, label `aicreds row-seal v1` and the master
key id) from a master key of the keyring. Someone who can write the database but does not hold
the keyring cannot make a seal, so a row changed in the database fails its check and is refused,
never used.

The seal records the id of the master key it was made with (column `seal_kek`), so seals made
before a rotation still verify while that key is in the keyring; `keys rewrap` re-seals them
under the primary (`reseal_rows`) before the old key can be retired.

Encoding: the row kind, then each field, each as one marker byte (0: NULL, 1: a value) and, for
a value, its UTF-8 length (4 bytes, big-endian) and bytes. Nothing here does I/O.

A row that fails its check is logged as `integrity error` with its kind and id (never a digest
or a seal), with how many of its kind this process has refused (`report_integrity_error`, also
used for credential values that fail to open).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import struct
from collections import Counter
from collections.abc import Sequence

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from services.vault.errors import UnknownMasterKey
from services.vault.keyring import KeyringSource
from services.vault.metrics import INTEGRITY_ERRORS

ROW_SEAL_LABEL = b"aicreds row-seal v1"
TOKEN_ROW = "api_token"
SESSION_ROW = "session"
PROVIDER_ROW = "provider"
CREDENTIAL_ROW = "credential"

_log = logging.getLogger("aicreds.vault.integrity")
_errors: Counter[str] = Counter()


def report_integrity_error(kind: str, row_id: str, user_id: str = "") -> None:
    """Log and count a row that failed its integrity check (ids only, never secrets; the
    metric by kind only)."""
    _errors[kind] += 1
    INTEGRITY_ERRORS.labels(row_kind=kind).inc()
    fields = {"row_kind": kind, "row_id": row_id, "count": _errors[kind]}
    if user_id:
        fields["user_id"] = user_id
    _log.error(
        "integrity error: a stored row failed its check and is refused", extra={"fields": fields}
    )


def canonical_fields(kind: str, fields: Sequence[str | None]) -> bytes:
    """The length-prefixed encoding of a row's sealed fields (see the module docstring)."""
    out = bytearray()
    for part in (kind, *fields):
        if part is None:
            out += b"\x00"
            continue
        encoded = part.encode("utf-8")
        out += b"\x01" + struct.pack(">I", len(encoded)) + encoded
    return bytes(out)


class RowSealer:
    """Makes and checks row seals with keys derived from the keyring's master keys."""

    def __init__(self, keyring: KeyringSource) -> None:
        self._keyring = keyring
        self._derived: dict[str, tuple[bytes, bytes]] = {}  # kek id -> (kek, derived key)

    def __repr__(self) -> str:
        return f"RowSealer(keyring={self._keyring!r})"

    def _key(self, kek_id: str, kek: bytes) -> bytes:
        cached = self._derived.get(kek_id)
        if cached is not None and hmac.compare_digest(cached[0], kek):
            return cached[1]
        derived = HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=None,
            info=ROW_SEAL_LABEL + b"\x00" + kek_id.encode("ascii"),
        ).derive(kek)
        self._derived[kek_id] = (kek, derived)
        return derived

    def seal(self, kind: str, fields: Sequence[str | None]) -> tuple[str, bytes]:
        """(master key id, seal) for a row, under the primary master key."""
        kek_id, kek = self._keyring.primary()
        return kek_id, self._mac(kek_id, kek, kind, fields)

    def _mac(self, kek_id: str, kek: bytes, kind: str, fields: Sequence[str | None]) -> bytes:
        message = canonical_fields(kind, fields)
        return hmac.new(self._key(kek_id, kek), message, hashlib.sha256).digest()

    def matches(
        self, kind: str, fields: Sequence[str | None], kek_id: str | None, seal: bytes | None
    ) -> bool:
        """Whether `seal` was made for exactly these fields (no logging: see `verify`)."""
        if kek_id is None or seal is None:
            return False
        try:
            kek = self._keyring.key(kek_id)
        except UnknownMasterKey:
            return False
        return hmac.compare_digest(self._mac(kek_id, kek, kind, fields), bytes(seal))

    def verify(
        self,
        kind: str,
        row_id: str,
        fields: Sequence[str | None],
        kek_id: str | None,
        seal: bytes | None,
        *,
        user_id: str = "",
    ) -> bool:
        """`matches`, and a failure is reported as an integrity error."""
        if self.matches(kind, fields, kek_id, seal):
            return True
        report_integrity_error(kind, row_id, user_id)
        return False
