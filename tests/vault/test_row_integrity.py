"""Rows that decide where values go and who may read them are bound to the keyring (SPEC 4.7):
a provider's configuration, a token's and a session's user, scopes, expiry and revocation.
Changed in the database without the keyring, the row is refused, never used; a database from
before migration 6 is sealed in place at the first start and keeps working."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from aicreds.vault.v1 import auth_pb2 as apb
from aicreds.vault.v1 import credentials_pb2 as cpb
from aicreds.vault.v1 import providers_pb2 as pb
from aicreds.vault.v1.auth_pb2_grpc import AuthServiceStub
from aicreds.vault.v1.credentials_pb2_grpc import CredentialServiceStub
from aicreds.vault.v1.providers_pb2_grpc import ProviderServiceStub

from services.vault.envelope import Envelope
from services.vault.errors import StartupRefused
from services.vault.keyring import Keyring, KeyringSource
from services.vault.providers import legacy_headers_purpose
from services.vault.store.database import utc_text
from services.vault.store.migrations import MIGRATIONS
from services.vault.store.sqlite_db import SqliteDatabase
from services.vault.store.vault_tables import SqlVaultStore
from services.vault.tokens import SecretHasher, new_token
from tests.support.databases import raw_execute, raw_fetch
from tests.support.vault import VaultHandle, running_vault
from tests.vault._admin import run_admin

FAR_FUTURE = "2099-01-01T00:00:00.000000Z"


@pytest.fixture
async def vault(tmp_path: Path) -> AsyncIterator[VaultHandle]:
    async with running_vault(tmp_path) as handle:
        yield handle


def _provider(name: str, models: list[str]) -> pb.Provider:
    return pb.Provider(
        name=name,
        kind=pb.PROVIDER_KIND_OPENAI,
        base_url=f"https://{name}.example/v1",
        headers={"Authorization": pb.HeaderValues(values=["Bearer {{credential:api_key}}"])},
        models=models,
        on_missing_credential=pb.ON_MISSING_CREDENTIAL_ERROR,
    )


def _tamper(vault: VaultHandle, sql: str, params: tuple[Any, ...] = ()) -> None:
    """Write the database directly, as someone without the keyring could."""
    assert raw_execute(vault.settings.database, sql, params) == 1


async def _failure(call: Any) -> tuple[grpc.StatusCode, str]:
    try:
        await call
    except grpc.aio.AioRpcError as err:
        return err.code(), dict(err.trailing_metadata() or ()).get("x-error-reason", "")
    raise AssertionError("the call succeeded")


def _integrity_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "integrity error" in r.getMessage()]


# -- providers ----------------------------------------------------------------------------------


async def _two_providers(vault: VaultHandle) -> tuple[ProviderServiceStub, CredentialServiceStub]:
    providers = ProviderServiceStub(vault.channel("gateway"))
    await CredentialServiceStub(vault.channel("gateway")).PutCredential(
        cpb.PutCredentialRequest(user_id="alice", key="api_key", value="sk-value-1234567890")
    )
    for provider in (_provider("mine", ["gpt-4o"]), _provider("other", ["other-model"])):
        await providers.CreateProvider(pb.CreateProviderRequest(user_id="alice", provider=provider))
    return providers, CredentialServiceStub(vault.channel("router"))


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("base_url", "https://attacker.example/v1"),
        ("kind", "anthropic"),
        ("models", json.dumps(["gpt-4o", "claude-3"])),
        ("on_missing_credential", "warn"),
    ],
)
async def test_a_provider_changed_in_the_database_is_refused_and_the_others_still_work(
    vault: VaultHandle, caplog: pytest.LogCaptureFixture, column: str, value: str
) -> None:
    providers, router = await _two_providers(vault)
    _tamper(
        vault,
        f"UPDATE providers SET {column} = ? WHERE user_id = 'alice' AND name = 'mine'",
        (value,),
    )
    refused = (grpc.StatusCode.INTERNAL, "integrity_error")
    assert (
        await _failure(providers.GetProvider(pb.GetProviderRequest(user_id="alice", name="mine")))
        == refused
    )
    assert (
        await _failure(router.Resolve(cpb.ResolveRequest(user_id="alice", provider_name="mine")))
        == refused
    )
    assert (
        await _failure(router.Resolve(cpb.ResolveRequest(user_id="alice", model="gpt-4o")))
        == refused
    )
    listed = await providers.ListProviders(pb.ListProvidersRequest(user_id="alice"))
    assert [p.name for p in listed.providers] == ["other"]
    other = await router.Resolve(cpb.ResolveRequest(user_id="alice", provider_name="other"))
    assert other.provider.base_url == "https://other.example/v1"
    assert dict(other.values) == {"api_key": "sk-value-1234567890"}
    logged = _integrity_errors(caplog)
    assert logged and all(r.__dict__["fields"]["row_kind"] == "provider" for r in logged)
    assert "sk-value-1234567890" not in caplog.text
    # The user can still replace it through the API, which seals it again.
    await providers.UpdateProvider(
        pb.UpdateProviderRequest(user_id="alice", provider=_provider("mine", ["gpt-4o"]))
    )
    await providers.GetProvider(pb.GetProviderRequest(user_id="alice", name="mine"))


# -- tokens and sessions ------------------------------------------------------------------------


async def _token(auth: AuthServiceStub, user: str = "alice", **kw: Any) -> apb.CreateTokenResponse:
    created: apb.CreateTokenResponse = await auth.CreateToken(
        apb.CreateTokenRequest(user_id=user, name="laptop", **kw)
    )
    return created


async def _authenticated(auth: AuthServiceStub, **credential: str) -> apb.AuthenticateResponse:
    response: apb.AuthenticateResponse = await auth.Authenticate(
        apb.AuthenticateRequest(**credential)
    )
    return response


@pytest.mark.parametrize(
    ("sql", "params"),
    [
        ("UPDATE api_tokens SET user_id = 'mallory' WHERE id = ?", ()),
        ('UPDATE api_tokens SET scopes = \'["admin","llm:invoke"]\' WHERE id = ?', ()),
        ("UPDATE api_tokens SET expires_at = ? WHERE id = ?", (FAR_FUTURE,)),
        ("UPDATE api_tokens SET parent_token_id = 'tok_0000000000000000' WHERE id = ?", ()),
        ("UPDATE api_tokens SET seal = NULL, seal_kek = NULL WHERE id = ?", ()),
    ],
    ids=["user", "scopes", "expiry", "parent", "seal-removed"],
)
async def test_a_token_changed_in_the_database_is_refused(
    vault: VaultHandle, caplog: pytest.LogCaptureFixture, sql: str, params: tuple[str, ...]
) -> None:
    auth = AuthServiceStub(vault.channel("gateway"))
    victim = await _token(auth, scopes=["llm:invoke"], expires_in_seconds=3600)
    bystander = await _token(auth)
    assert (await _authenticated(auth, token=victim.token)).authenticated
    _tamper(vault, sql, (*params, victim.info.id))
    result = await _authenticated(auth, token=victim.token)
    assert not result.authenticated
    assert result.failure == apb.AUTH_FAILURE_UNKNOWN  # the answer for an unknown token
    assert result.user_id == ""
    assert (await _authenticated(auth, token=bystander.token)).authenticated
    for user in ("alice", "mallory"):
        listed = await auth.ListTokens(apb.ListTokensRequest(user_id=user))
        assert victim.info.id not in [t.id for t in listed.tokens]
    (logged,) = {r.__dict__["fields"]["row_id"] for r in _integrity_errors(caplog)}
    assert logged == victim.info.id
    assert victim.token not in caplog.text


async def test_a_token_moved_onto_another_users_row_by_its_digest_is_refused(
    vault: VaultHandle,
) -> None:
    auth = AuthServiceStub(vault.channel("gateway"))
    mallory = await _token(auth, user="mallory")
    alice = await _token(auth, user="alice")
    database = vault.settings.database
    ((digest,),) = raw_fetch(
        database, "SELECT digest FROM api_tokens WHERE id = ?", (mallory.info.id,)
    )
    raw_execute(database, "DELETE FROM api_tokens WHERE id = ?", (mallory.info.id,))
    raw_execute(database, "UPDATE api_tokens SET digest = ? WHERE id = ?", (digest, alice.info.id))
    result = await _authenticated(auth, token=mallory.token)
    assert not result.authenticated and result.user_id == ""


async def test_a_revocation_undone_in_the_database_is_refused(vault: VaultHandle) -> None:
    auth = AuthServiceStub(vault.channel("gateway"))
    created = await _token(auth)
    await auth.RevokeToken(apb.RevokeTokenRequest(user_id="alice", token_id=created.info.id))
    _tamper(vault, "UPDATE api_tokens SET revoked_at = NULL WHERE id = ?", (created.info.id,))
    assert not (await _authenticated(auth, token=created.token)).authenticated


@pytest.mark.parametrize(
    ("sql", "params"),
    [
        ("UPDATE sessions SET expires_at = ? WHERE id = ?", (FAR_FUTURE,)),
        ("UPDATE sessions SET user_id = 'mallory' WHERE id = ?", ()),
        ("UPDATE sessions SET revoked_at = NULL WHERE id = ?", ()),
    ],
    ids=["expiry", "user", "revocation-undone"],
)
async def test_a_session_changed_in_the_database_is_refused(
    vault: VaultHandle, sql: str, params: tuple[str, ...]
) -> None:
    auth = AuthServiceStub(vault.channel("gateway"))
    token = await _token(auth)
    made = await auth.CreateSession(
        apb.CreateSessionRequest(user_id="alice", token_id=token.info.id, ttl_seconds=60)
    )
    if "revoked_at" in sql:
        await auth.RevokeSession(apb.RevokeSessionRequest(user_id="alice", session=made.session))
    else:
        assert (await _authenticated(auth, session=made.session)).authenticated
    _tamper(vault, sql, (*params, made.session_id))
    result = await _authenticated(auth, session=made.session)
    assert not result.authenticated and result.user_id == ""
    assert (await _authenticated(auth, token=token.token)).authenticated


async def test_revoking_a_token_and_its_sessions_keeps_them_sealed_and_refused(
    vault: VaultHandle,
) -> None:
    auth = AuthServiceStub(vault.channel("gateway"))
    parent = await _token(auth)
    made = await auth.CreateSession(
        apb.CreateSessionRequest(user_id="alice", token_id=parent.info.id)
    )
    await auth.RevokeToken(apb.RevokeTokenRequest(user_id="alice", token_id=parent.info.id))
    session = await _authenticated(auth, session=made.session)
    assert session.failure == apb.AUTH_FAILURE_REVOKED  # sealed again with its revocation
    listed = await auth.ListTokens(apb.ListTokensRequest(user_id="alice"))
    assert [t.HasField("revoked_at") for t in listed.tokens] == [True]


# -- rotation -----------------------------------------------------------------------------------


async def test_rotating_then_retiring_the_old_master_key_keeps_tokens_and_sessions_valid(
    tmp_path: Path,
) -> None:
    async with running_vault(tmp_path) as vault:
        auth = AuthServiceStub(vault.channel("gateway"))
        token = await _token(auth)
        made = await auth.CreateSession(
            apb.CreateSessionRequest(user_id="alice", token_id=token.info.id)
        )
        await run_admin(vault.files, "keys", "add")
        blocked = await run_admin(vault.files, "keys", "retire", "k1", ok=False)
        assert "row seal" in blocked.stderr
        rewrap = await run_admin(vault.files, "keys", "rewrap")
        assert "2 token and session seals moved to k2" in rewrap.stdout
        await run_admin(vault.files, "keys", "retire", "k1")
        assert (await _authenticated(auth, token=token.token)).authenticated
        assert (await _authenticated(auth, session=made.session)).authenticated
    async with running_vault(tmp_path) as restarted:
        auth = AuthServiceStub(restarted.channel("gateway"))
        assert (await _authenticated(auth, token=token.token)).authenticated
        assert (await _authenticated(auth, session=made.session)).authenticated


# -- a database from before migration 6 ---------------------------------------------------------


async def _legacy_database(path: Path, keyring: Keyring, token: str, session: str) -> None:
    """A database at migration 5 holding a provider, a token and a session as the vault wrote
    them then: headers sealed without the configuration in their AAD, no seals."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = await SqliteDatabase.open(path, migrations=MIGRATIONS[:5])
    try:
        store = SqlVaultStore(db)
        envelope = Envelope(store, KeyringSource(path.with_name("none"), keyring))
        headers = json.dumps([["Authorization", ["Bearer {{credential:api_key}}"]]])
        blob = await envelope.seal("alice", legacy_headers_purpose("mine"), headers)
        key_blob = await envelope.seal("alice", "api_key", "sk-legacy-value-123456")
        hasher = SecretHasher(keyring.pepper)
        now = utc_text()
        async with db.writing(lock=None) as conn:
            await conn.execute(
                "INSERT INTO credentials (user_id, key, blob, updated_at) VALUES (?, ?, ?, ?)",
                ("alice", "api_key", key_blob, now),
            )
            await conn.execute(
                "INSERT INTO providers (user_id, name, kind, base_url, models,"
                " on_missing_credential, headers, created_at, updated_at)"
                " VALUES ('alice', 'mine', 'openai', 'https://mine.example/v1', '[\"gpt-4o\"]',"
                " 'error', ?, ?, ?)",
                (blob, now, now),
            )
            await conn.execute(
                "INSERT INTO provider_models (user_id, model, provider)"
                " VALUES ('alice', 'gpt-4o', 'mine')"
            )
            await conn.execute(
                "INSERT INTO api_tokens (id, user_id, name, prefix, digest, scopes, created_at)"
                " VALUES ('tok_legacy', 'alice', 'old', ?, ?, '[\"llm:invoke\"]', ?)",
                (token[:8], hasher.token_digest(token), now),
            )
            await conn.execute(
                "INSERT INTO sessions (id, user_id, token_id, digest, created_at, expires_at)"
                " VALUES ('ses_legacy', 'alice', 'tok_legacy', ?, ?, ?)",
                (hasher.session_digest(session), now, FAR_FUTURE),
            )
    finally:
        await db.close()


@pytest.mark.sqlite_only("PostgreSQL databases start at schema 7: none predates migration 6")
async def test_a_database_from_before_migration_6_is_sealed_in_place_and_keeps_working(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    keyring = Keyring.generate()
    token = new_token()
    session = "aic-sess-" + "s" * 43
    await _legacy_database(tmp_path / "vault-state" / "vault.db", keyring, token, session)

    async def check(vault: VaultHandle) -> None:
        auth = AuthServiceStub(vault.channel("gateway"))
        by_token = await _authenticated(auth, token=token)
        assert by_token.authenticated and list(by_token.scopes) == ["llm:invoke"]
        assert (await _authenticated(auth, session=session)).user_id == "alice"
        router = CredentialServiceStub(vault.channel("router"))
        resolved = await router.Resolve(cpb.ResolveRequest(user_id="alice", model="gpt-4o"))
        assert resolved.provider.base_url == "https://mine.example/v1"
        assert dict(resolved.values) == {"api_key": "sk-legacy-value-123456"}

    caplog.set_level(logging.INFO, logger="aicreds.vault.resealing")
    async with running_vault(tmp_path, keyring=keyring) as vault:
        await check(vault)
    (sealed,) = [r for r in caplog.records if "before migration 6" in r.getMessage()]
    assert sealed.__dict__["fields"] == {
        "tokens": 1,
        "sessions": 1,
        "providers": 1,
        "providers_refused": 0,
    }
    caplog.clear()
    async with running_vault(tmp_path) as again:  # idempotent: nothing pending any more
        await check(again)
        assert not [r for r in caplog.records if "before migration 6" in r.getMessage()]
        # Sealed now: a later change without the keyring is refused.
        _tamper(again, "UPDATE api_tokens SET scopes = '[\"admin\"]' WHERE id = 'tok_legacy'")
        _tamper(again, "UPDATE providers SET base_url = 'https://attacker.example/v1'")
        auth = AuthServiceStub(again.channel("gateway"))
        assert not (await _authenticated(auth, token=token)).authenticated
        router = CredentialServiceStub(again.channel("router"))
        assert await _failure(
            router.Resolve(cpb.ResolveRequest(user_id="alice", provider_name="mine"))
        ) == (grpc.StatusCode.INTERNAL, "integrity_error")


async def test_a_keyring_without_the_key_that_seals_tokens_is_refused_at_start(
    tmp_path: Path,
) -> None:
    original = Keyring.generate()
    async with running_vault(tmp_path, keyring=original) as vault:
        await _token(AuthServiceStub(vault.channel("gateway")))
        await run_admin(vault.files, "keys", "add")
        await run_admin(vault.files, "keys", "rewrap")  # the seal moves to k2
    with pytest.raises(StartupRefused, match="k2"):
        async with running_vault(tmp_path, keyring=original):
            pass
