"""The master-key file: every refusal names the problem and the fix; dev keys; reloads."""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from services.common.callers import write_private_file
from services.vault.config import VaultSettings
from services.vault.errors import StartupRefused, UnknownMasterKey
from services.vault.keyring import Keyring, KeyringSource, load_or_generate
from services.vault.server import start_vault
from tests.support.vault import prepare_vault_files, running_vault

GOOD = base64.b64encode(b"\x01" * 32).decode()
PEPPER = base64.b64encode(b"\x02" * 32).decode()


def _write(path: Path, data: Any, mode: int = 0o600) -> Path:
    write_private_file(path, data if isinstance(data, str) else json.dumps(data))
    os.chmod(path, mode)
    return path


def _keyfile(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"version": 1, "primary": "k1", "keys": {"k1": GOOD}, "pepper": PEPPER}
    data.update(overrides)
    return data


@pytest.mark.no_store
@pytest.mark.parametrize(
    ("data", "mode", "message"),
    [
        (_keyfile(keys={"k1": base64.b64encode(b"\x01" * 16).decode()}), 0o600, "too short"),
        (_keyfile(keys={"k1": base64.b64encode(b"\x00" * 32).decode()}), 0o600, "all zeros"),
        (_keyfile(), 0o640, "chmod 600"),
        (_keyfile(), 0o604, "chmod 600"),
        (_keyfile(), 0o660, "chmod 600"),
        (_keyfile(primary="k9"), 0o600, "primary 'k9'"),
        (_keyfile(keys={"k1": "not base64!"}), 0o600, "not valid base64"),
        (_keyfile(pepper=None), 0o600, "pepper"),
        (_keyfile(version=7), 0o600, '"version": 1'),
        (_keyfile(keys={}), 0o600, "no keys"),
        ("{not json", 0o600, "not valid JSON"),
    ],
)
def test_bad_key_files_are_refused_with_what_to_do(
    tmp_path: Path, data: Any, mode: int, message: str
) -> None:
    path = _write(tmp_path / "keys.json", data, mode)
    with pytest.raises(StartupRefused, match=message) as info:
        Keyring.load(path)
    assert str(path) in str(info.value)
    assert GOOD not in str(info.value)


@pytest.mark.no_store
def test_a_missing_key_file_is_refused_and_the_message_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(StartupRefused, match="VAULT_GENERATE_DEV_KEY=true"):
        load_or_generate(tmp_path / "absent.json", generate_dev_key=False)


@pytest.mark.no_store
def test_a_development_key_is_generated_once_with_mode_0600_and_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state" / "keys.json"
    with caplog.at_level(logging.WARNING):
        first = load_or_generate(path, generate_dev_key=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert any("DEVELOPMENT MASTER KEY" in r.getMessage() for r in caplog.records)
    second = load_or_generate(path, generate_dev_key=True)
    assert second.primary_key == first.primary_key
    assert len(first.primary_key) == 32 and len(first.pepper) == 32


async def test_the_vault_refuses_to_start_with_a_refused_key_file(tmp_path: Path) -> None:
    files = prepare_vault_files(tmp_path)
    os.chmod(files.keyring_file, 0o644)
    with pytest.raises(StartupRefused, match="chmod 600"):
        await start_vault(VaultSettings.from_env(files.env()))


async def test_a_wrong_master_key_is_refused_at_start(tmp_path: Path) -> None:
    async with running_vault(tmp_path) as vault:
        await vault.running.credentials.put("test", "alice", "openai_api_key", "sk-wrong-key-1")
    # Same key id, different key material: the database was not encrypted with it.
    write_private_file(tmp_path / "vault-state" / "master-keys.json", Keyring.generate().to_json())
    with pytest.raises(StartupRefused, match="'k1' .* is not the key this database"):
        async with running_vault(tmp_path):
            pass


async def test_a_keyring_without_a_key_in_use_is_refused_at_start(tmp_path: Path) -> None:
    async with running_vault(tmp_path) as vault:
        await vault.running.credentials.put("test", "alice", "openai_api_key", "sk-wrong-key-2")
    with pytest.raises(StartupRefused, match=r"\['k1'\] that the keyring file does not hold"):
        async with running_vault(tmp_path, keyring=Keyring.generate("k2")):
            pass


async def test_the_right_key_restarts_and_reads_everything(tmp_path: Path) -> None:
    async with running_vault(tmp_path) as vault:
        await vault.running.credentials.put("test", "alice", "openai_api_key", "sk-restart-1")
    async with running_vault(tmp_path) as vault:
        assert (
            await vault.running.credentials.get("test", "alice", "openai_api_key") == "sk-restart-1"
        )


@pytest.mark.no_store
def test_an_unknown_key_id_reloads_the_file_once_then_fails(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    k1 = Keyring.generate("k1")
    write_private_file(path, k1.to_json())
    source = KeyringSource(path, Keyring.load(path))
    with pytest.raises(UnknownMasterKey, match="'k2'"):
        source.key("k2")
    # Another process adds k2 and makes it primary.
    both = Keyring("k2", {"k1": k1.primary_key, "k2": os.urandom(32)}, k1.pepper)
    write_private_file(path, both.to_json())
    assert source.key("k2") == both.get("k2")
    assert source.primary()[0] == "k2"


@pytest.mark.no_store
def test_a_changed_file_makes_the_new_primary_used_for_new_data_keys(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    k1 = Keyring.generate("k1")
    write_private_file(path, k1.to_json())
    source = KeyringSource(path, Keyring.load(path))
    assert source.primary()[0] == "k1"
    both = Keyring("k2", {"k1": k1.primary_key, "k2": os.urandom(32)}, k1.pepper)
    write_private_file(path, both.to_json())
    os.utime(path, ns=(1, 1))  # the stamp is mtime and size: make sure it changes
    assert source.primary()[0] == "k2"
