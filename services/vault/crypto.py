"""AES-256-GCM sealing with self-describing, versioned blobs (SPEC 4.3).

A sealed blob, format version 1:

    offset  size  field
    0       1     format version (1)
    1       1     length N of the key id
    2       N     key id (ASCII): the key that sealed it (a master key id for a wrapped data
                  key, a data key id for a credential value or provider headers)
    2+N     12    random nonce (96 bits, fresh for every seal)
    14+N    >=16  ciphertext followed by the GCM tag

The associated data binds a ciphertext to where it belongs, so a blob copied to another user, to
another credential key or to another purpose fails to open. It is the concatenation of the
format version, the user id, the purpose (a credential key, `provider:<name>:headers`,
`dek:<data key id>`, ...) and the key id, each prefixed by its length (4 bytes, big-endian).

Format version 2 has the same layout and binds one more field, the `binding` (a credential's
bound hosts, canonical JSON: SPEC 2.9, 4.7), appended to the associated data the same way. It is
used only when there is a binding, so that every unbound value keeps format 1 and existing
data needs no rewrite; opening a format-1 blob with a binding, or a format-2 blob with another
binding, fails.

This module is pure: no I/O, no grpc.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.vault.errors import DecryptionFailed

FORMAT_VERSION = 1
BOUND_FORMAT_VERSION = 2
_VERSIONS = (FORMAT_VERSION, BOUND_FORMAT_VERSION)
KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
_MAX_KEY_ID = 255


@dataclass(frozen=True)
class SealedBlob:
    """A parsed blob: which format, which key, the nonce and the ciphertext with its tag."""

    version: int
    key_id: str
    nonce: bytes
    ciphertext: bytes

    def to_bytes(self) -> bytes:
        key_id = self.key_id.encode("ascii")
        return bytes((self.version, len(key_id))) + key_id + self.nonce + self.ciphertext

    @classmethod
    def parse(cls, data: bytes) -> SealedBlob:
        """Parse a stored blob; DecryptionFailed if it is truncated or of an unknown version."""
        if len(data) < 2:
            raise DecryptionFailed("stored blob is truncated")
        version = data[0]
        if version not in _VERSIONS:
            raise DecryptionFailed(f"stored blob has unknown format version {version}")
        id_len = data[1]
        end_of_id = 2 + id_len
        if id_len == 0 or len(data) < end_of_id + NONCE_SIZE + TAG_SIZE:
            raise DecryptionFailed("stored blob is truncated")
        try:
            key_id = data[2:end_of_id].decode("ascii")
        except UnicodeDecodeError:
            raise DecryptionFailed("stored blob has a malformed key id") from None
        return cls(
            version=version,
            key_id=key_id,
            nonce=data[end_of_id : end_of_id + NONCE_SIZE],
            ciphertext=data[end_of_id + NONCE_SIZE :],
        )


def associated_data(
    version: int, user_id: str, purpose: str, key_id: str, binding: str = ""
) -> bytes:
    """Length-prefixed (version, user id, purpose, key id[, binding]): where a ciphertext
    belongs; the binding is part of it from format version 2 on."""
    parts: tuple[str, ...] = (str(version), user_id, purpose, key_id)
    if version >= BOUND_FORMAT_VERSION:
        parts += (binding,)
    out = bytearray()
    for part in parts:
        encoded = part.encode("utf-8")
        out += struct.pack(">I", len(encoded))
        out += encoded
    return bytes(out)


def seal(
    key: bytes, key_id: str, plaintext: bytes, *, user_id: str, purpose: str, binding: str = ""
) -> bytes:
    """Encrypt `plaintext` under `key` (named `key_id`) for `user_id` and `purpose`, bound to
    `binding` if it is not empty (format version 2)."""
    if len(key) != KEY_SIZE:
        raise ValueError("AES-256-GCM needs a 32-byte key")
    if not key_id or len(key_id.encode("ascii")) > _MAX_KEY_ID:
        raise ValueError("key id must be 1-255 ASCII characters")
    nonce = os.urandom(NONCE_SIZE)
    version = BOUND_FORMAT_VERSION if binding else FORMAT_VERSION
    aad = associated_data(version, user_id, purpose, key_id, binding)
    ciphertext = AESGCM(key).encrypt(nonce, plaintext, aad)
    return SealedBlob(version, key_id, nonce, ciphertext).to_bytes()


def open_sealed(
    key: bytes, blob: SealedBlob, *, user_id: str, purpose: str, binding: str = ""
) -> bytes:
    """Decrypt a parsed blob; DecryptionFailed if it was altered, belongs elsewhere, or was
    sealed with another `binding` (an unbound blob opens only with no binding)."""
    return open_sealed_with(AESGCM(key), blob, user_id=user_id, purpose=purpose, binding=binding)


def open_sealed_with(
    cipher: AESGCM, blob: SealedBlob, *, user_id: str, purpose: str, binding: str = ""
) -> bytes:
    """`open_sealed` with the key's cipher made already: a key used for many blobs (a cached
    data key) is set up once, not for each blob (most of an open's cost for a small blob)."""
    if blob.version == FORMAT_VERSION and binding:
        raise DecryptionFailed("stored blob was sealed without the binding stored beside it")
    aad = associated_data(blob.version, user_id, purpose, blob.key_id, binding)
    try:
        return cipher.decrypt(blob.nonce, blob.ciphertext, aad)
    except InvalidTag:
        raise DecryptionFailed("stored blob failed authentication") from None
