"""Master-key rotation end to end through `aicreds-admin`, beside a running vault."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

from aicreds.vault.v1 import credentials_pb2 as pb
from aicreds.vault.v1.credentials_pb2_grpc import CredentialServiceStub

from services.common.callers import write_private_file
from services.vault.keyring import Keyring
from tests.support.databases import raw_execute, raw_fetch
from tests.support.vault import VaultHandle, running_vault
from tests.vault._admin import master_keys_of_data_keys, run_admin, start_admin


def _value(user: str, key: str) -> str:
    return f"sk-ROTATION-{user}-{key}-0123456789abcdef"


async def _write_users(vault: VaultHandle, users: list[str]) -> None:
    stub = CredentialServiceStub(vault.channel("gateway"))
    for user in users:
        await stub.ReplaceCredentials(
            pb.ReplaceCredentialsRequest(
                user_id=user, credentials={k: _value(user, k) for k in ("openai", "anthropic")}
            )
        )


async def _assert_readable(vault: VaultHandle, users: list[str]) -> None:
    stub = CredentialServiceStub(vault.channel("gateway"))
    for user in users:
        got = await stub.GetCredentials(pb.GetCredentialsRequest(user_id=user))
        assert dict(got.credentials) == {k: _value(user, k) for k in ("openai", "anthropic")}


def _keyring(vault: VaultHandle) -> Keyring:
    return Keyring.load(vault.keyring_file)


async def test_rotation_end_to_end_while_a_vault_runs(tmp_path: Path) -> None:
    old_users = [f"user{i:02d}" for i in range(12)]
    async with running_vault(tmp_path) as writer:
        await _write_users(writer, old_users)
    assert set(master_keys_of_data_keys(writer.settings.database).values()) == {"k1"}

    # A vault that starts now holds k1 only and has no data key cached.
    async with running_vault(tmp_path) as vault:
        files, database = vault.files, vault.settings.database
        added = await run_admin(files, "keys", "add")
        assert added.stdout.strip() == "k2"
        assert vault.keyring_file.stat().st_mode & 0o777 == 0o600
        assert (_keyring(vault).primary_id, _keyring(vault).key_ids) == ("k2", ["k1", "k2"])
        await _assert_readable(vault, old_users[:2])  # under k1, with k2 primary

        refused = await run_admin(files, "keys", "retire", "k1", ok=False)
        assert "still wraps 12 data key(s)" in refused.stderr
        assert _keyring(vault).key_ids == ["k1", "k2"]

        rewrap = await run_admin(files, "keys", "rewrap", "--batch-size", "4")
        assert "rewrap done: 12 data keys re-wrapped under k2 in 3 batches" in rewrap.stdout
        assert set(master_keys_of_data_keys(database).values()) == {"k2"}
        # Data keys now name k2, which this vault has not loaded: it reloads the file.
        await _assert_readable(vault, old_users)

        await run_admin(files, "keys", "retire", "k1")
        assert _keyring(vault).key_ids == ["k2"]
        assert vault.keyring_file.stat().st_mode & 0o777 == 0o600
        await _assert_readable(vault, old_users)

        await _write_users(vault, ["newcomer"])
        assert master_keys_of_data_keys(database)["newcomer"] == "k2"
        listing = await run_admin(files, "keys", "list")
        assert listing.stdout.split("\n")[1].split() == ["k2", "yes", "13"]

    # A restart with only k2 in the file reads everything.
    async with running_vault(tmp_path) as restarted:
        await _assert_readable(restarted, [*old_users, "newcomer"])


async def test_a_vault_running_through_the_whole_rotation_keeps_serving(tmp_path: Path) -> None:
    async with running_vault(tmp_path) as vault:
        await _write_users(vault, ["alice", "bob"])
        await run_admin(vault.files, "keys", "add")
        await _write_users(vault, ["carol"])  # a first write after the add: under the new key
        assert master_keys_of_data_keys(vault.settings.database) == {
            "alice": "k1",
            "bob": "k1",
            "carol": "k2",
        }
        await run_admin(vault.files, "keys", "rewrap")
        await run_admin(vault.files, "keys", "retire", "k1")
        await _assert_readable(vault, ["alice", "bob", "carol"])
        await _write_users(vault, ["alice"])
        await _assert_readable(vault, ["alice"])
    async with running_vault(tmp_path) as restarted:
        await _assert_readable(restarted, ["alice", "bob", "carol"])


async def test_the_primary_and_unknown_keys_cannot_be_retired(tmp_path: Path) -> None:
    async with running_vault(tmp_path) as vault:
        primary = await run_admin(vault.files, "keys", "retire", "k1", ok=False)
        assert "is the primary" in primary.stderr
        unknown = await run_admin(vault.files, "keys", "retire", "k9", ok=False)
        assert "not in the keyring" in unknown.stderr
        assert _keyring(vault).key_ids == ["k1"]


async def test_a_rewrap_stopped_after_one_batch_leaves_everything_readable_and_resumes(
    tmp_path: Path,
) -> None:
    users = [f"u{i:02d}" for i in range(10)]
    async with running_vault(tmp_path) as vault:
        await _write_users(vault, users)
        await run_admin(vault.files, "keys", "add")
        partial = await run_admin(
            vault.files, "keys", "rewrap", "--batch-size", "3", "--max-batches", "1"
        )
        assert "stopped early" in partial.stdout
        by_key = master_keys_of_data_keys(vault.settings.database)
        assert sorted(by_key.values()).count("k2") == 3
        await run_admin(vault.files, "keys", "retire", "k1", ok=False)
    async with running_vault(tmp_path) as restarted:
        await _assert_readable(restarted, users)
        again = await run_admin(restarted.files, "keys", "rewrap", "--batch-size", "3")
        assert "rewrap done: 7 data keys re-wrapped" in again.stdout
        rerun = await run_admin(restarted.files, "keys", "rewrap")
        assert "rewrap done: 0 data keys re-wrapped" in rerun.stdout
        await run_admin(restarted.files, "keys", "retire", "k1")
        await _assert_readable(restarted, users)


async def test_a_rewrap_killed_mid_run_loses_nothing_and_can_be_run_again(
    tmp_path: Path,
) -> None:
    users = [f"k{i:03d}" for i in range(40)]
    async with running_vault(tmp_path) as vault:
        await _write_users(vault, users)
        await run_admin(vault.files, "keys", "add")
        process = await start_admin(
            vault.files, "keys", "rewrap", "--batch-size", "1", "--pause", "0.05"
        )
        database = vault.settings.database
        deadline = time.monotonic() + 30
        while "k2" not in master_keys_of_data_keys(database).values():
            assert time.monotonic() < deadline and process.returncode is None
            await asyncio.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        await process.communicate()
        assert process.returncode == -signal.SIGKILL
        by_key = master_keys_of_data_keys(database)
        moved = sorted(by_key.values()).count("k2")
        assert 0 < moved < len(users), "the kill must land mid-run"
        await _assert_readable(vault, users)
    async with running_vault(tmp_path) as restarted:
        await _assert_readable(restarted, users)
        await run_admin(restarted.files, "keys", "rewrap", "--batch-size", "7")
        assert set(master_keys_of_data_keys(database).values()) == {"k2"}
        await run_admin(restarted.files, "keys", "retire", "k1")
        await _assert_readable(restarted, users)


async def test_a_batch_with_a_bad_row_changes_nothing(tmp_path: Path) -> None:
    users = [f"b{i}" for i in range(6)]
    async with running_vault(tmp_path) as vault:
        await _write_users(vault, users)
        await run_admin(vault.files, "keys", "add")
        database = vault.settings.database
        # Damage the data key of the 5th user (by id order), inside the second batch of 3.
        ((blob,),) = raw_fetch(database, "SELECT wrapped FROM data_keys WHERE user_id = 'b4'")
        damaged = blob[:-1] + bytes([blob[-1] ^ 1])
        raw_execute(database, "UPDATE data_keys SET wrapped = ? WHERE user_id = 'b4'", (damaged,))
        before = dict(raw_fetch(database, "SELECT user_id, wrapped FROM data_keys"))
        failed = await run_admin(vault.files, "keys", "rewrap", "--batch-size", "3", ok=False)
        assert "'b4'" in failed.stderr and "not changed" in failed.stderr
        after = dict(raw_fetch(database, "SELECT user_id, wrapped FROM data_keys"))
        by_key = master_keys_of_data_keys(database)
        assert [by_key[u] for u in users] == ["k2", "k2", "k2", "k1", "k1", "k1"]
        assert all(after[u] == before[u] for u in ("b3", "b4", "b5"))
        await run_admin(vault.files, "keys", "retire", "k1", ok=False)
    async with running_vault(tmp_path) as restarted:
        await _assert_readable(restarted, [u for u in users if u != "b4"])


async def test_keys_add_never_reuses_a_retired_id_and_keeps_the_pepper(tmp_path: Path) -> None:
    async with running_vault(tmp_path) as vault:
        pepper = _keyring(vault).pepper
        await run_admin(vault.files, "keys", "add")
        await run_admin(vault.files, "keys", "retire", "k1")
        assert (await run_admin(vault.files, "keys", "add")).stdout.strip() == "k3"
        keyring = _keyring(vault)
        assert keyring.key_ids == ["k2", "k3"] and keyring.pepper == pepper
        data = json.loads(vault.keyring_file.read_text())
        assert data["version"] == 1 and data["primary"] == "k3"


async def test_a_retired_id_is_not_reused_even_when_it_was_the_highest(tmp_path: Path) -> None:
    # An operator who backs a rotation out: k2 is added, then k1 made primary again by hand,
    # the data keys re-wrapped under k1 and k2 retired. The next key must not be called k2.
    async with running_vault(tmp_path) as vault:
        await _write_users(vault, ["alice"])
        await run_admin(vault.files, "keys", "add")
        await _write_users(vault, ["bob"])  # a data key under k2
        data = json.loads(vault.keyring_file.read_text())
        write_private_file(vault.keyring_file, json.dumps({**data, "primary": "k1"}))
        await run_admin(vault.files, "keys", "rewrap")
        await run_admin(vault.files, "keys", "retire", "k2")
        assert (await run_admin(vault.files, "keys", "add")).stdout.strip() == "k3"
        await _assert_readable(vault, ["alice", "bob"])
