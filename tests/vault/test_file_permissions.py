"""Files that hold secrets (issue 15 item 3): the keyring file written by rotation (and every
private file) is written durably without following planted names, the state directory is
owner-only, and caller token files and the database are refused at start when group or others
may read them, as the keyring and callers files already are."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from services.common.callers import read_secret_file, write_private_file
from services.vault.config import VaultSettings
from services.vault.errors import StartupRefused
from services.vault.server import start_vault
from tests.support.vault import prepare_vault_files, running_vault


def test_a_private_file_is_written_owner_only_with_nothing_left_beside_it(tmp_path: Path) -> None:
    target = tmp_path / "master-keys.json"
    write_private_file(target, "one")
    write_private_file(target, "two")
    assert target.read_text() == "two"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["master-keys.json"]


def test_a_planted_symlink_at_a_temporary_name_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    target = tmp_path / "state" / "master-keys.json"
    target.parent.mkdir()
    (target.parent / "master-keys.json.tmp").symlink_to(victim)
    write_private_file(target, "secret keys")
    assert victim.read_text() == "untouched"
    assert not target.is_symlink() and target.read_text() == "secret keys"


def test_the_file_and_its_directory_are_fsynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[bool] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    write_private_file(tmp_path / "master-keys.json", "keys")
    assert synced == [False, True]  # the file, then the directory after the rename


def test_a_missing_state_directory_is_created_owner_only(tmp_path: Path) -> None:
    write_private_file(tmp_path / "state" / "master-keys.json", "keys")
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700


async def test_rotation_writes_the_keyring_file_owner_only(tmp_path: Path) -> None:
    from tests.vault._admin import run_admin

    async with running_vault(tmp_path) as vault:
        await run_admin(vault.files, "keys", "add")
        assert stat.S_IMODE(vault.keyring_file.stat().st_mode) == 0o600
        leftovers = [p.name for p in vault.keyring_file.parent.iterdir() if "tmp" in p.name]
        assert leftovers == []


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660], ids=lambda mode: f"{mode:04o}")
def test_a_caller_token_file_others_may_read_is_refused(tmp_path: Path, mode: int) -> None:
    token = tmp_path / "router-vault.token"
    write_private_file(token, "svc-token\n")
    assert read_secret_file(token) == "svc-token"
    token.chmod(mode)
    with pytest.raises(ValueError) as err:
        read_secret_file(token)
    assert str(token) in str(err.value) and f"{mode:04o}" in str(err.value)
    assert "svc-token" not in str(err.value)


@pytest.mark.sqlite_only("the mode of the SQLite database file and its WAL")
@pytest.mark.parametrize("suffix", ["", "-wal"])
async def test_a_database_others_may_read_is_refused_at_start(tmp_path: Path, suffix: str) -> None:
    async with running_vault(tmp_path):
        pass  # creates the database
    files = prepare_vault_files(tmp_path)
    shared = Path(f"{files.database}{suffix}")
    shared.touch()
    shared.chmod(0o644)
    with pytest.raises(StartupRefused) as err:
        await start_vault(VaultSettings.from_env(files.env()))
    assert str(shared) in str(err.value) and "0644" in str(err.value)
    shared.chmod(0o600)
    running = await start_vault(VaultSettings.from_env(files.env()))
    await running.stop(0)
