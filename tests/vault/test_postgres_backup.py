"""Backup and restore of a vault on PostgreSQL: `pg_dump -Fc`, then `pg_restore` into a fresh
database. The dump is as secret-free as the database: every value in it is sealed, so it is
readable with the vault's keyring and with nothing else."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

import pytest
from aicreds.vault.v1 import auth_pb2
from aicreds.vault.v1 import credentials_pb2 as cpb
from aicreds.vault.v1 import providers_pb2 as ppb
from aicreds.vault.v1.auth_pb2_grpc import AuthServiceStub
from aicreds.vault.v1.credentials_pb2_grpc import CredentialServiceStub
from aicreds.vault.v1.providers_pb2_grpc import ProviderServiceStub

from services.vault.errors import StartupRefused
from services.vault.keyring import Keyring
from services.vault.store.location import PostgresUrl
from tests.support.vault import VaultFiles, prepare_vault_files, running_vault

pytestmark = pytest.mark.postgres_only("pg_dump and pg_restore of a vault's database")

USERS = ("alice", "bob", "carol")


def _url(files: VaultFiles) -> str:
    assert isinstance(files.database, PostgresUrl)
    return files.database.url


def _run(*command: str) -> subprocess.CompletedProcess[bytes]:
    done = subprocess.run(command, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode()
    return done


async def test_a_restored_dump_is_readable_with_the_keyring_only(tmp_path: Path) -> None:
    keyring = Keyring.generate()
    values: dict[str, dict[str, str]] = {}
    tokens: list[str] = []
    literal = f"literal-BACKUP-{secrets.token_hex(8)}"
    async with running_vault(tmp_path / "live", keyring=keyring) as vault:
        manage = CredentialServiceStub(vault.channel("gateway"))
        for user in USERS:
            values[user] = {
                key: f"sk-BACKUP-{user}-{key}-{secrets.token_hex(8)}"
                for key in ("openai_api_key", "anthropic_api_key")
            }
            await manage.ReplaceCredentials(
                cpb.ReplaceCredentialsRequest(user_id=user, credentials=values[user])
            )
            created = await AuthServiceStub(vault.channel("gateway")).CreateToken(
                auth_pb2.CreateTokenRequest(user_id=user, name="cli")
            )
            tokens.append(created.token)
        await manage.SetCredentialHosts(
            cpb.SetCredentialHostsRequest(
                user_id="alice", key="openai_api_key", hosts=["api.openai.com"]
            )
        )
        await ProviderServiceStub(vault.channel("gateway")).CreateProvider(
            ppb.CreateProviderRequest(
                user_id="alice",
                provider=ppb.Provider(
                    name="custom",
                    kind=ppb.PROVIDER_KIND_CUSTOM,
                    base_url="https://llm.example.com/v1",
                    headers={"X-Literal": ppb.HeaderValues(values=[literal])},
                    models=["m"],
                ),
            )
        )

    dump = tmp_path / "vault.dump"
    _run("pg_dump", "-Fc", "--no-owner", "--file", str(dump), "--dbname", _url(vault.files))
    # A fresh database (tests.support.postgres.create_database), restored from the dump.
    restored = prepare_vault_files(tmp_path / "restored", keyring=keyring)
    _run("pg_restore", "--no-owner", "--exit-on-error", "--dbname", _url(restored), str(dump))

    # Nothing in the dump is readable without the keyring: neither the custom format's bytes nor
    # the SQL it holds (decompressed; bytea as hex) contain a value or a token.
    script = _run("pg_restore", "--file", "-", str(dump)).stdout
    assert b"openai_api_key" in script and b"alice" in script  # the search can find things
    secrets_held = [v for user in USERS for v in values[user].values()] + [literal]
    for stored in (dump.read_bytes(), script):
        for secret in secrets_held:
            assert secret.encode() not in stored and secret.encode().hex().encode() not in stored
        for token in tokens:
            assert token.encode() not in stored and token[8:].encode() not in stored

    # Another keyring cannot open it: the vault refuses to start, whether the key under the
    # same id differs or the keyring lacks the id in use.
    with pytest.raises(StartupRefused, match="'k1' in the keyring file is not the key"):
        async with running_vault(tmp_path / "restored", keyring=Keyring.generate()):
            pass
    with pytest.raises(StartupRefused, match=r"master key\(s\) \['k1'\] that the keyring"):
        async with running_vault(tmp_path / "restored", keyring=Keyring.generate("k2")):
            pass

    # With the vault's keyring, the restored database answers as the original did.
    async with running_vault(tmp_path / "restored", keyring=keyring) as vault:
        manage = CredentialServiceStub(vault.channel("gateway"))
        for user in USERS:
            got = await manage.GetCredentials(cpb.GetCredentialsRequest(user_id=user))
            assert dict(got.credentials) == values[user]
        hosts = await manage.GetCredentialHosts(cpb.GetCredentialHostsRequest(user_id="alice"))
        assert list(hosts.hosts["openai_api_key"].hosts) == ["api.openai.com"]
        resolved = await CredentialServiceStub(vault.channel("router")).Resolve(
            cpb.ResolveRequest(user_id="alice", provider_name="custom")
        )
        assert list(resolved.provider.headers["X-Literal"].values) == [literal]
        auth = AuthServiceStub(vault.channel("gateway"))
        for user, token in zip(USERS, tokens, strict=True):
            reply = await auth.Authenticate(auth_pb2.AuthenticateRequest(token=token))
            assert reply.authenticated and reply.user_id == user
