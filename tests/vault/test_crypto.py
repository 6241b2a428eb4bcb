"""Sealed blobs: tampering, truncation, unknown versions and misplaced ciphertexts all fail."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from services.common.callers import write_private_file
from services.vault import crypto
from services.vault.envelope import DataKey, unwrap_data_key, wrap_data_key
from services.vault.errors import DecryptionFailed
from services.vault.keyring import Keyring, KeyringSource

pytestmark = pytest.mark.no_store

KEY = os.urandom(32)
SECRET = "sk-proj-crypto-test-secret-0123456789"


def _seal(plaintext: str = SECRET, user: str = "alice", purpose: str = "openai_api_key") -> bytes:
    return crypto.seal(KEY, "d1", plaintext.encode(), user_id=user, purpose=purpose)


def _open(blob: bytes, user: str = "alice", purpose: str = "openai_api_key") -> str:
    parsed = crypto.SealedBlob.parse(blob)
    return crypto.open_sealed(KEY, parsed, user_id=user, purpose=purpose).decode()


def test_round_trip_and_self_describing_header() -> None:
    blob = _seal()
    parsed = crypto.SealedBlob.parse(blob)
    assert (parsed.version, parsed.key_id, len(parsed.nonce)) == (1, "d1", 12)
    assert _open(blob) == SECRET
    assert SECRET.encode() not in blob


def test_same_plaintext_encrypts_differently_each_time() -> None:
    blobs = {_seal() for _ in range(20)}
    assert len(blobs) == 20
    nonces = {crypto.SealedBlob.parse(b).nonce for b in blobs}
    assert len(nonces) == 20


def test_a_flipped_bit_in_any_byte_fails() -> None:
    blob = _seal()
    for i in range(len(blob)):
        for bit in (0x01, 0x80):
            tampered = bytearray(blob)
            tampered[i] ^= bit
            with pytest.raises(DecryptionFailed):
                _open(bytes(tampered))


@pytest.mark.parametrize("cut", [0, 1, 2, 5, 14, 20, -1])
def test_a_truncated_blob_is_rejected(cut: int) -> None:
    blob = _seal()
    with pytest.raises(DecryptionFailed):
        _open(blob[:cut])


@pytest.mark.parametrize("version", [0, 3, 255])
def test_an_unknown_version_is_rejected(version: int) -> None:
    blob = bytearray(_seal())
    blob[0] = version
    with pytest.raises(DecryptionFailed, match="unknown format version"):
        crypto.SealedBlob.parse(bytes(blob))


def test_ciphertext_is_bound_to_user_and_credential_key() -> None:
    blob = _seal(user="alice", purpose="openai_api_key")
    with pytest.raises(DecryptionFailed):
        _open(blob, user="bob", purpose="openai_api_key")
    with pytest.raises(DecryptionFailed):
        _open(blob, user="alice", purpose="anthropic_api_key")
    with pytest.raises(DecryptionFailed):
        _open(blob, user="alice", purpose="provider:openai:headers")


def test_the_format_version_is_bound_too() -> None:
    # A blob relabelled as another format version fails to open even where a parser accepts it.
    parsed = crypto.SealedBlob.parse(_seal())
    with pytest.raises(DecryptionFailed):
        crypto.open_sealed(
            KEY, dataclasses.replace(parsed, version=2), user_id="alice", purpose="openai_api_key"
        )


def test_associated_data_is_length_prefixed() -> None:
    # Without length prefixes these two would concatenate to the same bytes.
    a = crypto.associated_data(1, "ab", "c", "k1")
    b = crypto.associated_data(1, "a", "bc", "k1")
    assert a != b


def test_wrapped_data_key_is_bound_to_user_and_records_the_master_key(tmp_path: Path) -> None:
    keyring = Keyring.generate("k1")
    write_private_file(tmp_path / "keys.json", keyring.to_json())
    source = KeyringSource(tmp_path / "keys.json", keyring)
    dek = DataKey("alice", "d1", os.urandom(32))
    wrapped = wrap_data_key("k1", keyring.primary_key, dek)
    assert crypto.SealedBlob.parse(wrapped.blob).key_id == "k1"
    assert unwrap_data_key(source, wrapped).key == dek.key
    stolen = type(wrapped)("bob", wrapped.dek_id, wrapped.kek_id, wrapped.blob)
    with pytest.raises(DecryptionFailed):
        unwrap_data_key(source, stolen)


def test_reprs_hold_no_key_material() -> None:
    keyring = Keyring.generate("k1")
    dek = DataKey("alice", "d1", os.urandom(32))
    wrapped = wrap_data_key("k1", keyring.primary_key, dek)
    for obj in (keyring, dek, wrapped):
        text = repr(obj)
        for material in (keyring.primary_key, keyring.pepper, dek.key, wrapped.blob):
            assert material.hex() not in text
            assert repr(material) not in text


def test_a_data_keys_cipher_opens_what_its_key_sealed_and_nothing_misplaced() -> None:
    dek = DataKey("alice", "d1", KEY)
    parsed = crypto.SealedBlob.parse(_seal())
    opened = crypto.open_sealed_with(dek.cipher, parsed, user_id="alice", purpose="openai_api_key")
    assert opened.decode() == SECRET
    for user, purpose in (("bob", "openai_api_key"), ("alice", "other_key")):
        with pytest.raises(DecryptionFailed):
            crypto.open_sealed_with(dek.cipher, parsed, user_id=user, purpose=purpose)
    other = DataKey("alice", "d1", os.urandom(32))
    with pytest.raises(DecryptionFailed):
        crypto.open_sealed_with(other.cipher, parsed, user_id="alice", purpose="openai_api_key")
