"""`aicreds-admin` as operators run it: a subprocess on the vault's state, running or not."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from aicreds.vault.v1 import auth_pb2 as pb
from aicreds.vault.v1.auth_pb2_grpc import AuthServiceStub

from services.common.callers import write_private_file
from services.vault.keyring import Keyring
from tests.support.vault import VaultFiles, VaultHandle, prepare_vault_files, running_vault
from tests.vault._admin import run_admin

TOKEN = re.compile(r"sk-aic-[A-Za-z0-9_-]{43}")


async def _json(files: VaultFiles, *args: str) -> Any:
    return json.loads((await run_admin(files, *args, "--json")).stdout)


async def _authenticate(vault: VaultHandle, token: str) -> pb.AuthenticateResponse:
    stub = AuthServiceStub(vault.channel("gateway"))
    response: pb.AuthenticateResponse = await stub.Authenticate(pb.AuthenticateRequest(token=token))
    return response


async def test_create_token_prints_only_the_token_and_it_works(tmp_path: Path) -> None:
    async with running_vault(tmp_path) as vault:
        created = await run_admin(
            vault.files,
            "create-token",
            "--user",
            "alice",
            "--name",
            "ci",
            "--scopes",
            "llm:invoke,credentials:read",
            "--expires-in",
            "30d",
        )
        assert TOKEN.fullmatch(created.stdout.rstrip("\n")) and created.stdout.count("\n") == 1
        token = created.stdout.strip()
        assert token not in created.stderr and token[8:] not in created.stderr
        assert "tok_" in created.stderr  # details for the operator go to stderr
        result = await _authenticate(vault, token)
        assert result.authenticated and result.user_id == "alice"
        assert list(result.scopes) == ["credentials:read", "llm:invoke"]
        assert abs(result.expires_at.ToSeconds() - (time.time() + 30 * 86400)) < 60


async def test_the_first_token_is_bootstrapped_with_the_vault_stopped(tmp_path: Path) -> None:
    files = prepare_vault_files(tmp_path)
    created = await run_admin(files, "create-token", "--user", "root")
    token = created.stdout.strip()
    assert TOKEN.fullmatch(token)
    if isinstance(files.database, Path):  # the command made the SQLite file, owner-only
        assert files.database.stat().st_mode & 0o777 == 0o600
    async with running_vault(tmp_path) as vault:
        result = await _authenticate(vault, token)
        assert result.authenticated and result.user_id == "root"
        assert len(result.scopes) == 6  # all scopes by default
        assert not result.HasField("expires_at")


async def test_list_and_revoke_tokens(tmp_path: Path) -> None:
    async with running_vault(tmp_path) as vault:
        files = vault.files
        token = (await run_admin(files, "create-token", "--user", "alice", "--name", "a")).stdout
        token = token.strip()
        await run_admin(files, "create-token", "--user", "bob", "--name", "b")
        listed = json.loads(
            (await run_admin(files, "list-tokens", "--user", "alice", "--json")).stdout
        )
        assert [(t["name"], t["prefix"], t["revoked_at"]) for t in listed] == [
            ("a", token[:8], None)
        ]
        table = (await run_admin(files, "list-tokens", "--user", "alice")).stdout
        assert listed[0]["id"] in table and token[8:] not in table
        assert (await _authenticate(vault, token)).authenticated

        revoked = await run_admin(files, "revoke-token", listed[0]["id"])
        assert listed[0]["id"] in revoked.stdout
        # Effective at once for the running vault.
        assert (await _authenticate(vault, token)).failure == pb.AUTH_FAILURE_REVOKED
        again = json.loads(
            (await run_admin(files, "list-tokens", "--user", "alice", "--json")).stdout
        )
        assert again[0]["revoked_at"] is not None

        missing = await run_admin(files, "revoke-token", "tok_0000000000000000", ok=False)
        assert "no such token" in missing.stderr
        empty = await run_admin(files, "list-tokens", "--user", "carol")
        assert empty.stdout == ""


async def test_invalid_arguments_are_refused_with_a_reason(tmp_path: Path) -> None:
    files = prepare_vault_files(tmp_path)
    scope = await run_admin(files, "create-token", "--user", "a", "--scopes", "root", ok=False)
    assert "unknown scope 'root'" in scope.stderr and scope.stdout == ""
    lifetime = await run_admin(
        files, "create-token", "--user", "a", "--expires-in", "soon", ok=False
    )
    assert "invalid lifetime" in lifetime.stderr
    usage = await run_admin(files, "create-token", ok=None)
    assert usage.returncode == 2 and "--user" in usage.stderr
    batch = await run_admin(files, "keys", "rewrap", "--batch-size", "0", ok=None)
    assert batch.returncode == 2


async def test_audit_shows_the_users_events(tmp_path: Path) -> None:
    async with running_vault(tmp_path) as vault:
        created = await run_admin(vault.files, "create-token", "--user", "alice")
        token_id = json.loads(
            (await run_admin(vault.files, "list-tokens", "--user", "alice", "--json")).stdout
        )[0]["id"]
        await run_admin(vault.files, "revoke-token", token_id)
        events = json.loads(
            (await run_admin(vault.files, "audit", "--user", "alice", "--json")).stdout
        )
        assert [(e["action"], e["keys"], e["caller"], e["outcome"]) for e in events] == [
            ("tokens.revoke", [token_id], "admin", "ok"),
            ("tokens.create", [token_id], "admin", "ok"),
        ]
        table = (await run_admin(vault.files, "audit", "--user", "alice", "--limit", "1")).stdout
        assert "tokens.revoke" in table and "tokens.create" not in table
        assert created.stdout.strip()[8:] not in table


async def test_keys_list_shows_keys_primary_and_use(tmp_path: Path) -> None:
    files = prepare_vault_files(tmp_path)
    listing = await run_admin(files, "keys", "list")
    assert listing.stdout.splitlines() == ["KEY  PRIMARY  DATA KEYS", "k1   yes      0"]


async def test_a_wrong_or_unsafe_keyring_is_refused(tmp_path: Path) -> None:
    async with running_vault(tmp_path) as vault:
        await run_admin(vault.files, "create-token", "--user", "alice")
        files = vault.files
    files.keyring_file.chmod(0o644)
    unsafe = await run_admin(files, "keys", "list", ok=False)
    assert "chmod 600" in unsafe.stderr
    # Another key under the same id: refused before anything is touched.
    write_private_file(files.keyring_file, Keyring.generate().to_json())
    wrong = await run_admin(files, "create-token", "--user", "alice", ok=False)
    assert "not the key this database was encrypted with" in wrong.stderr
    assert wrong.stdout == ""
