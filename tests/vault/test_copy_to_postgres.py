"""`aicreds-admin copy-to-postgres`: a SQLite vault moved to PostgreSQL, as an operator does it.

A real vault on SQLite is filled through its gRPC API and stopped; the command copies its file
into a fresh PostgreSQL database; a vault started there with the same keyring must answer
every read as before (values, bindings, providers, tokens, audit log).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aicreds.vault.v1 import audit_pb2, auth_pb2
from aicreds.vault.v1 import credentials_pb2 as cpb
from aicreds.vault.v1 import providers_pb2 as ppb
from aicreds.vault.v1.audit_pb2_grpc import AuditServiceStub
from aicreds.vault.v1.auth_pb2_grpc import AuthServiceStub
from aicreds.vault.v1.credentials_pb2_grpc import CredentialServiceStub
from aicreds.vault.v1.providers_pb2_grpc import ProviderServiceStub

from services.vault.keyring import Keyring
from services.vault.store.copying import TABLES
from services.vault.store.location import PostgresUrl
from services.vault.store.migrations import MIGRATIONS
from services.vault.store.sqlite_db import SqliteDatabase
from tests.support.databases import raw_fetch
from tests.support.vault import (
    VaultFiles,
    VaultHandle,
    prepare_vault_files,
    running_vault,
    use_backend,
)
from tests.vault._admin import AdminResult, run_admin

pytestmark = pytest.mark.postgres_only("copies a SQLite vault into a PostgreSQL database")

USERS = ("alice", "bob", "carol")
PASSWORD = "pw-COPY-never-printed-4711"


def _hv(*values: str) -> ppb.HeaderValues:
    return ppb.HeaderValues(values=list(values))


@contextmanager
def _on_sqlite() -> Iterator[None]:
    """Vaults started in the block keep their state in SQLite (the test runs on PostgreSQL)."""
    use_backend("sqlite")
    try:
        yield
    finally:
        use_backend("postgresql")


@dataclass
class SqliteVault:
    """A stopped SQLite vault filled through its API, with what it answered."""

    files: VaultFiles
    keyring: Keyring
    values: list[str] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)  # role -> plaintext
    session: str = ""
    reads: dict[str, Any] = field(default_factory=dict)
    audit: dict[str, list[audit_pb2.AuditEvent]] = field(default_factory=dict)

    @property
    def database(self) -> Path:
        assert isinstance(self.files.database, Path)
        return self.files.database


async def _reads(vault: VaultHandle) -> dict[str, Any]:
    """Everything a caller can read of the users, but their audit log."""
    manage = CredentialServiceStub(vault.channel("gateway"))
    router = CredentialServiceStub(vault.channel("router"))
    providers = ProviderServiceStub(vault.channel("gateway"))
    auth = AuthServiceStub(vault.channel("gateway"))
    out: dict[str, Any] = {}
    for user in USERS:
        out[f"{user}/credentials"] = await manage.GetCredentials(
            cpb.GetCredentialsRequest(user_id=user)
        )
        out[f"{user}/hosts"] = await manage.GetCredentialHosts(
            cpb.GetCredentialHostsRequest(user_id=user)
        )
        listed = await providers.ListProviders(ppb.ListProvidersRequest(user_id=user))
        out[f"{user}/providers"] = listed
        for provider in listed.providers:
            out[f"{user}/resolve/{provider.name}"] = await router.Resolve(
                cpb.ResolveRequest(user_id=user, provider_name=provider.name)
            )
        out[f"{user}/resolve-model"] = await router.Resolve(
            cpb.ResolveRequest(user_id=user, model="gpt-4o")
        )
        out[f"{user}/tokens"] = await auth.ListTokens(auth_pb2.ListTokensRequest(user_id=user))
    return out


async def _audit(vault: VaultHandle) -> dict[str, list[audit_pb2.AuditEvent]]:
    stub = AuditServiceStub(vault.channel("gateway"))
    return {
        user: list(
            (
                await stub.ListAuditEvents(
                    audit_pb2.ListAuditEventsRequest(user_id=user, limit=1000)
                )
            ).events
        )
        for user in USERS
    }


async def _fill(vault: VaultHandle, built: SqliteVault) -> None:
    manage = CredentialServiceStub(vault.channel("gateway"))
    providers = ProviderServiceStub(vault.channel("gateway"))
    auth = AuthServiceStub(vault.channel("gateway"))
    for user in USERS:
        values = {
            key: f"sk-COPY-{user}-{key}-{secrets.token_hex(6)}"
            for key in ("openai_api_key", "anthropic_api_key", "extra")
        }
        built.values += values.values()
        await manage.ReplaceCredentials(
            cpb.ReplaceCredentialsRequest(user_id=user, credentials=values)
        )
        await manage.SetCredentialHosts(
            cpb.SetCredentialHostsRequest(
                user_id=user, key="openai_api_key", hosts=["api.openai.com"]
            )
        )
        literal = f"literal-COPY-{user}-{secrets.token_hex(6)}"
        built.values.append(literal)
        await providers.CreateProvider(
            ppb.CreateProviderRequest(
                user_id=user,
                provider=ppb.Provider(
                    name="openai",
                    kind=ppb.PROVIDER_KIND_OPENAI,
                    base_url="https://api.openai.com/v1",
                    headers={
                        "Authorization": _hv("Bearer {{credential:openai_api_key}}"),
                        "X-Literal": _hv(literal),
                    },
                    models=["gpt-4o", "gpt-4o-mini"],
                    on_missing_credential=ppb.ON_MISSING_CREDENTIAL_ERROR,
                ),
            )
        )
        await providers.CreateProvider(
            ppb.CreateProviderRequest(
                user_id=user,
                provider=ppb.Provider(
                    name="anthropic",
                    kind=ppb.PROVIDER_KIND_ANTHROPIC,
                    base_url="https://api.anthropic.com",
                    headers={"x-api-key": _hv("{{credential:anthropic_api_key}}")},
                    models=["claude-sonnet-4"],
                ),
            )
        )
        # A failed read is audited too.
        with pytest.raises(Exception, match="NOT_FOUND"):
            await manage.GetCredential(cpb.GetCredentialRequest(user_id=user, key="absent"))
        created = await auth.CreateToken(auth_pb2.CreateTokenRequest(user_id=user, name="cli"))
        built.tokens[user] = created.token
    parent = await auth.ListTokens(auth_pb2.ListTokensRequest(user_id="alice"))
    child = await auth.CreateToken(
        auth_pb2.CreateTokenRequest(
            user_id="alice", name="child", parent_token_id=parent.tokens[0].id
        )
    )
    built.tokens["alice-child"] = child.token
    revoked = await auth.CreateToken(auth_pb2.CreateTokenRequest(user_id="bob", name="old"))
    await auth.RevokeToken(auth_pb2.RevokeTokenRequest(user_id="bob", token_id=revoked.info.id))
    built.tokens["bob-revoked"] = revoked.token
    session = await auth.CreateSession(
        auth_pb2.CreateSessionRequest(
            user_id="alice", token_id=parent.tokens[0].id, ttl_seconds=3600
        )
    )
    built.session = session.session
    assert (
        await auth.Authenticate(auth_pb2.AuthenticateRequest(token=created.token))
    ).authenticated


async def _sqlite_vault(tmp_path: Path) -> SqliteVault:
    """A SQLite vault with several users' data, stopped."""
    keyring = Keyring.generate()
    with _on_sqlite():
        async with running_vault(tmp_path / "sqlite", keyring=keyring) as vault:
            built = SqliteVault(vault.files, keyring)
            await _fill(vault, built)
            built.reads = await _reads(vault)
            built.audit = await _audit(vault)  # last: the reads above are audited too
    return built


def _target(tmp_path: Path, keyring: Keyring, name: str = "pg") -> VaultFiles:
    """The state of a vault on a fresh PostgreSQL database (created, not yet migrated)."""
    return prepare_vault_files(tmp_path / name, keyring=keyring)


def _url(files: VaultFiles, *, password: bool = False) -> str:
    assert isinstance(files.database, PostgresUrl)
    url = files.database.url
    # The test server trusts its clients: a password in the URL is accepted and ignored.
    return url.replace("://postgres@", f"://postgres:{PASSWORD}@") if password else url


async def _copy(files: VaultFiles, source: Path, url: str, *, ok: bool) -> AdminResult:
    return await run_admin(files, "copy-to-postgres", str(source), url, ok=ok)


def _counts(files: VaultFiles) -> dict[str, int]:
    assert isinstance(files.database, PostgresUrl)
    return {t: int(raw_fetch(files.database, f"SELECT count(*) FROM {t}")[0][0]) for t in TABLES}


def _sqlite_counts(path: Path) -> dict[str, int]:
    return {t: int(raw_fetch(path, f"SELECT count(*) FROM {t}")[0][0]) for t in TABLES}


def _assert_no_secret(result: AdminResult, built: SqliteVault) -> None:
    output = result.stdout + result.stderr
    for secret in [*built.values, *built.tokens.values(), built.session, PASSWORD]:
        assert secret not in output
    for token in built.tokens.values():
        assert token[8:] not in output


async def test_a_copied_vault_answers_as_before(tmp_path: Path) -> None:
    built = await _sqlite_vault(tmp_path)
    target = _target(tmp_path, built.keyring)
    result = await _copy(target, built.database, _url(target, password=True), ok=True)
    _assert_no_secret(result, built)

    # One line per table: its rows in SQLite and in PostgreSQL.
    expected = _sqlite_counts(built.database)
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["TABLE", "SQLITE", "POSTGRESQL"]
    printed = {line.split()[0]: line.split()[1:] for line in lines[1 : 1 + len(TABLES)]}
    assert printed == {t: [str(n), str(n)] for t, n in expected.items()}
    assert expected["audit_events"] > 0 and expected["sessions"] == 1
    assert expected["api_tokens"] == len(USERS) + 2
    assert "postgres:***@" in result.stdout
    assert f"{len(USERS)} users sampled, {3 * len(USERS)} credentials" in result.stdout
    assert _counts(target) == expected

    async with running_vault(tmp_path / "pg", keyring=built.keyring) as vault:
        assert await _audit(vault) == built.audit  # first: the reads below are audited
        assert await _reads(vault) == built.reads
        for user in USERS:
            values = built.reads[f"{user}/credentials"].credentials
            assert set(values.values()) <= set(built.values) and len(values) == 3

        auth = AuthServiceStub(vault.channel("gateway"))

        async def authenticate(**credential: str) -> auth_pb2.AuthenticateResponse:
            reply: auth_pb2.AuthenticateResponse = await auth.Authenticate(
                auth_pb2.AuthenticateRequest(**credential)
            )
            return reply

        for user in USERS:
            reply = await authenticate(token=built.tokens[user])
            assert reply.authenticated and reply.user_id == user
        assert (await authenticate(token=built.tokens["alice-child"])).authenticated
        assert (await authenticate(session=built.session)).session_id
        revoked = await authenticate(token=built.tokens["bob-revoked"])
        assert not revoked.authenticated
        assert revoked.failure == auth_pb2.AUTH_FAILURE_REVOKED

        # New audit rows continue after the copied ids.
        copied = max(e.id for events in built.audit.values() for e in events)
        manage = CredentialServiceStub(vault.channel("gateway"))
        await manage.PutCredential(
            cpb.PutCredentialRequest(user_id="dave", key="k", value="v-COPY-new")
        )
        newest = (await _audit(vault))["alice"][0].id
        dave = (
            await AuditServiceStub(vault.channel("gateway")).ListAuditEvents(
                audit_pb2.ListAuditEventsRequest(user_id="dave")
            )
        ).events
        assert dave[0].id > copied and newest > copied


async def test_refuses_a_target_that_holds_rows(tmp_path: Path) -> None:
    built = await _sqlite_vault(tmp_path)
    target = _target(tmp_path, built.keyring)
    await _copy(target, built.database, _url(target), ok=True)
    before = _counts(target)
    again = await _copy(target, built.database, _url(target, password=True), ok=False)
    assert "not empty: table data_keys holds rows" in again.stderr
    assert "nothing was written" in again.stderr
    assert again.stdout == ""
    _assert_no_secret(again, built)
    assert _counts(target) == before


async def test_refuses_a_target_a_vault_has_run_on(tmp_path: Path) -> None:
    built = await _sqlite_vault(tmp_path)
    target = _target(tmp_path, built.keyring)
    async with running_vault(tmp_path / "pg", keyring=built.keyring) as vault:
        # A read of an empty map writes nothing but its audit row.
        await CredentialServiceStub(vault.channel("gateway")).GetCredentials(
            cpb.GetCredentialsRequest(user_id="alice")
        )
    before = _counts(target)
    assert before["audit_events"] == 1 and before["data_keys"] == 0
    refused = await _copy(target, built.database, _url(target), ok=False)
    assert "table master_key_checks holds rows" in refused.stderr  # the vault's start wrote it
    assert _counts(target) == before


async def test_refuses_a_missing_sqlite_file(tmp_path: Path) -> None:
    target = _target(tmp_path, Keyring.generate())
    missing = tmp_path / "nowhere" / "vault.db"
    refused = await _copy(target, missing, _url(target), ok=False)
    assert f"no SQLite file at {missing}" in refused.stderr
    assert not missing.exists()
    assert raw_fetch(
        target.database,  # never migrated: the command stopped before it touched the target
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()",
    ) == [(0,)]


async def test_refuses_a_sqlite_file_of_an_older_schema(tmp_path: Path) -> None:
    old = tmp_path / "old" / "vault.db"
    await (await SqliteDatabase.open(old, migrations=MIGRATIONS[:-1])).close()
    target = _target(tmp_path, Keyring.generate())
    refused = await _copy(target, old, _url(target), ok=False)
    assert f"schema version {MIGRATIONS[-2].version}" in refused.stderr
    assert "to migrate it" in refused.stderr


async def test_a_wrong_keyring_fails_the_verification_and_nothing_stays_copied(
    tmp_path: Path,
) -> None:
    built = await _sqlite_vault(tmp_path)
    target = _target(tmp_path, Keyring.generate())  # the same key id, another key
    failed = await _copy(target, built.database, _url(target, password=True), ok=False)
    assert "verification failed" in failed.stderr
    assert "does not open with the keyring file" in failed.stderr
    assert "nothing was written" in failed.stderr
    _assert_no_secret(failed, built)
    assert set(_counts(target).values()) == {0}  # one transaction: rolled back

    # With the right keyring the same target takes the copy.
    right = _target(tmp_path, built.keyring)
    await _copy(right, built.database, _url(right), ok=True)
    assert _counts(right) == _sqlite_counts(built.database)
