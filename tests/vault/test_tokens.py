"""API tokens: format, scopes, hashing, lifetimes; then through a real vault."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from aicreds.vault.v1 import auth_pb2 as pb
from aicreds.vault.v1.auth_pb2_grpc import AuthServiceStub

from services.common.scopes import ALL_SCOPES
from services.vault.keyring import Keyring, KeyringSource
from services.vault.row_seals import RowSealer
from services.vault.store.tokens import SqlAuthStore
from services.vault.tokens import (
    SecretHasher,
    TokenService,
    display_prefix,
    is_well_formed_token,
    new_token,
    parse_lifetime,
)
from tests.support.databases import open_test_database, raw_fetch
from tests.support.vault import VaultHandle, running_vault
from tests.vault._disk import age, database_bytes, forms_of

PEPPER = bytes(range(32))


def test_new_token_has_prefix_and_32_random_url_safe_bytes() -> None:
    token = new_token()
    assert token.startswith("sk-aic-")
    body = token.removeprefix("sk-aic-")
    assert len(base64.urlsafe_b64decode(body + "=")) == 32
    assert is_well_formed_token(token)
    assert display_prefix(token) == token[:8]
    assert len({new_token() for _ in range(100)}) == 100


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sk-aic-",
        "sk-aic-short",
        "sk-aix-" + "a" * 43,
        "SK-AIC-" + "a" * 43,
        "sk-aic-" + "a" * 42,
        "sk-aic-" + "a" * 42 + "!",
        "sk-aic-" + "a" * 43 + "\n",
        " sk-aic-" + "a" * 43,
        "sk-aic-" + "a" * 300,
    ],
)
def test_malformed_tokens_are_recognised(text: str) -> None:
    assert not is_well_formed_token(text)


def test_hasher_is_keyed_and_separates_tokens_from_sessions() -> None:
    token = new_token()
    hasher = SecretHasher(PEPPER)
    assert hasher.token_digest(token) == SecretHasher(PEPPER).token_digest(token)
    assert hasher.token_digest(token) != SecretHasher(bytes(32)).token_digest(token)
    assert hasher.token_digest(token) != hasher.session_digest(token)
    assert len(hasher.token_digest(token)) == 32
    assert PEPPER.hex() not in repr(hasher)
    with pytest.raises(ValueError):
        SecretHasher(b"short")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30d", 30 * 86400),
        ("12h", 12 * 3600),
        ("45m", 45 * 60),
        ("90s", 90),
        ("2w", 14 * 86400),
        ("3600", 3600),
        ("never", 0),
        ("0", 0),
    ],
)
def test_lifetimes_parse(text: str, seconds: int) -> None:
    assert parse_lifetime(text) == seconds


@pytest.mark.parametrize("text", ["", "d", "-1d", "1y", "1.5h", "30 days", "0d"])
def test_bad_lifetimes_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_lifetime(text)


# -- through a real vault ---------------------------------------------------------------------


@pytest.fixture
async def vault(tmp_path: Path) -> AsyncIterator[VaultHandle]:
    async with running_vault(tmp_path) as handle:
        yield handle


@pytest.fixture
def auth(vault: VaultHandle) -> AuthServiceStub:
    return AuthServiceStub(vault.channel("gateway"))


async def _create(auth: AuthServiceStub, user: str = "alice", **kw: Any) -> pb.CreateTokenResponse:
    response: pb.CreateTokenResponse = await auth.CreateToken(
        pb.CreateTokenRequest(user_id=user, name=kw.pop("name", "laptop"), **kw)
    )
    return response


async def _authenticate(auth: AuthServiceStub, token: str) -> pb.AuthenticateResponse:
    response: pb.AuthenticateResponse = await auth.Authenticate(pb.AuthenticateRequest(token=token))
    return response


def _reason(err: grpc.aio.AioRpcError) -> str:
    reason: str = dict(err.trailing_metadata() or ())["x-error-reason"]
    return reason


async def test_created_token_authenticates_as_its_user_with_all_scopes(
    auth: AuthServiceStub,
) -> None:
    created = await _create(auth)
    assert is_well_formed_token(created.token)
    info = created.info
    assert info.id.startswith("tok_") and info.user_id == "alice" and info.name == "laptop"
    assert info.prefix == created.token[:8]
    assert list(info.scopes) == list(ALL_SCOPES)
    assert not info.HasField("expires_at") and not info.HasField("revoked_at")
    assert abs(info.created_at.ToSeconds() - time.time()) < 5
    result = await _authenticate(auth, created.token)
    assert result.authenticated and result.failure == pb.AUTH_FAILURE_UNSPECIFIED
    assert (result.user_id, result.token_id, result.token_prefix) == (
        "alice",
        info.id,
        created.token[:8],
    )
    assert list(result.scopes) == list(ALL_SCOPES)
    assert not result.HasField("expires_at") and result.session_id == ""


async def test_narrowed_scopes_and_expiry_are_kept(auth: AuthServiceStub) -> None:
    created = await _create(
        auth, scopes=["llm:invoke", "credentials:read"], expires_in_seconds=3600
    )
    assert list(created.info.scopes) == ["credentials:read", "llm:invoke"]
    assert abs(created.info.expires_at.ToSeconds() - (time.time() + 3600)) < 5
    result = await _authenticate(auth, created.token)
    assert list(result.scopes) == ["credentials:read", "llm:invoke"]
    assert result.expires_at == created.info.expires_at


@pytest.mark.parametrize(
    "request_fields",
    [
        {"scopes": ["llm:invoke", "everything"]},
        {"scopes": ["LLM:INVOKE"]},
        {"expires_in_seconds": -1},
        {"expires_in_seconds": 10 * 365 * 86400 + 1},  # over 10 years (`token_rules`)
        {"expires_in_seconds": 100 * 365 * 86400},
        {"name": "x" * 129},
        {"name": "bad\nname"},
        {"name": ""},
        {"name": "   "},
        {"user_id": ""},
    ],
)
async def test_invalid_create_requests_are_invalid_argument(
    auth: AuthServiceStub, request_fields: dict[str, Any]
) -> None:
    fields = {"user_id": "alice", "name": "n", **request_fields}
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await auth.CreateToken(pb.CreateTokenRequest(**fields))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    listed = await auth.ListTokens(pb.ListTokensRequest(user_id="alice"))
    assert list(listed.tokens) == []


async def test_the_bounds_of_token_rules_are_accepted(auth: AuthServiceStub) -> None:
    longest = await _create(auth, name="x" * 128, expires_in_seconds=10 * 365 * 86400)
    assert abs(longest.info.expires_at.ToSeconds() - (time.time() + 10 * 365 * 86400)) < 5
    shortest = await _create(auth, name="é", expires_in_seconds=1)
    assert shortest.info.HasField("expires_at")


async def test_revoked_expired_malformed_and_unknown_fail_with_distinct_reasons(
    vault: VaultHandle, auth: AuthServiceStub
) -> None:
    revoked = await _create(auth, name="revoked")
    await auth.RevokeToken(pb.RevokeTokenRequest(user_id="alice", token_id=revoked.info.id))
    expiring = await _create(auth, name="short-lived", expires_in_seconds=60)
    assert (await _authenticate(auth, expiring.token)).authenticated
    age(vault.settings.database, "api_tokens", expiring.info.id, 50)
    assert (await _authenticate(auth, expiring.token)).authenticated  # ten seconds to go
    age(vault.settings.database, "api_tokens", expiring.info.id, 11)
    cases = {
        "revoked": revoked.token,
        "expired": expiring.token,
        "malformed": "sk-aic-tooshort",
        "unknown": new_token(),
    }
    failures = {}
    for name, token in cases.items():
        result = await _authenticate(auth, token)
        assert not result.authenticated and result.user_id == "" and list(result.scopes) == []
        failures[name] = result.failure
    assert failures == {
        "revoked": pb.AUTH_FAILURE_REVOKED,
        "expired": pb.AUTH_FAILURE_EXPIRED,
        "malformed": pb.AUTH_FAILURE_MALFORMED,
        "unknown": pb.AUTH_FAILURE_UNKNOWN,
    }
    # A revoked or expired token's holder learns which token it was (debug header), no more.
    result = await _authenticate(auth, revoked.token)
    assert (result.token_id, result.token_prefix) == (revoked.info.id, revoked.token[:8])
    empty = await auth.Authenticate(pb.AuthenticateRequest())
    assert empty.failure == pb.AUTH_FAILURE_MALFORMED


async def test_list_shows_no_secret_newest_first_and_only_the_users_own(
    auth: AuthServiceStub,
) -> None:
    first = await _create(auth, name="first")
    second = await _create(auth, name="second", scopes=["llm:invoke"])
    bobs = await _create(auth, user="bob", name="bob's")
    await auth.RevokeToken(pb.RevokeTokenRequest(user_id="alice", token_id=first.info.id))
    listed = await auth.ListTokens(pb.ListTokensRequest(user_id="alice"))
    assert [t.name for t in listed.tokens] == ["second", "first"]
    assert listed.tokens[1].HasField("revoked_at") and not listed.tokens[0].HasField("revoked_at")
    assert list(listed.tokens[0].scopes) == ["llm:invoke"]
    wire = listed.SerializeToString()
    for created in (first, second):
        assert created.token.encode() not in wire
        assert created.token[8:].encode() not in wire
    bob_list = await auth.ListTokens(pb.ListTokensRequest(user_id="bob"))
    assert [t.id for t in bob_list.tokens] == [bobs.info.id]


async def test_revoke_is_idempotent_and_scoped_to_the_owner(auth: AuthServiceStub) -> None:
    created = await _create(auth)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await auth.RevokeToken(pb.RevokeTokenRequest(user_id="bob", token_id=created.info.id))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert _reason(err.value) == "token_not_found"
    assert (await _authenticate(auth, created.token)).authenticated
    first = await auth.RevokeToken(pb.RevokeTokenRequest(user_id="alice", token_id=created.info.id))
    again = await auth.RevokeToken(pb.RevokeTokenRequest(user_id="alice", token_id=created.info.id))
    assert first.HasField("revoked_at") and again.revoked_at == first.revoked_at
    for token_id in ("tok_doesnotexist", "", "not-an-id"):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await auth.RevokeToken(pb.RevokeTokenRequest(user_id="alice", token_id=token_id))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_last_used_is_recorded_and_shown(auth: AuthServiceStub) -> None:
    created = await _create(auth)
    listed = await auth.ListTokens(pb.ListTokensRequest(user_id="alice"))
    assert not listed.tokens[0].HasField("last_used_at")
    await _authenticate(auth, created.token)
    listed = await auth.ListTokens(pb.ListTokensRequest(user_id="alice"))
    assert abs(listed.tokens[0].last_used_at.ToSeconds() - time.time()) < 5


async def test_last_used_is_written_at_most_once_a_minute(tmp_path: Path) -> None:
    now = [1_800_000_000.0]
    db = await open_test_database(tmp_path)
    try:
        store = SqlAuthStore(db, RowSealer(KeyringSource(tmp_path / "keys", Keyring.generate())))
        tokens = TokenService(store, SecretHasher(PEPPER), clock=lambda: now[0])
        created = await tokens.create("admin", "alice", name="n")
        writes: list[str] = []
        original_touch = store.touch_token

        async def counting_touch(token_id: str, now: float, older_than: float) -> None:
            writes.append(token_id)
            await original_touch(token_id, now, older_than)

        store.touch_token = counting_touch  # type: ignore[method-assign]
        for step in range(0, 60, 5):  # a request every 5 s for a minute: one write
            now[0] = 1_800_000_000.0 + step
            assert (await tokens.authenticate(created.token)).authenticated
        assert len(writes) == 1
        (info,) = await tokens.list("alice")
        assert info.last_used_at == pytest.approx(1_800_000_000.0)
        now[0] = 1_800_000_000.0 + 61
        await tokens.authenticate(created.token)
        assert len(writes) == 2
        (info,) = await tokens.list("alice")
        assert info.last_used_at == pytest.approx(1_800_000_061.0)
    finally:
        await db.close()


async def test_the_database_holds_no_token_in_any_greppable_form(vault: VaultHandle) -> None:
    auth = AuthServiceStub(vault.channel("gateway"))
    tokens = [(await _create(auth, name=f"t{i}")).token for i in range(3)]
    for token in tokens:
        assert (await _authenticate(auth, token)).authenticated
    await auth.RevokeToken(
        pb.RevokeTokenRequest(
            user_id="alice",
            token_id=(await auth.ListTokens(pb.ListTokensRequest(user_id="alice"))).tokens[0].id,
        )
    )
    database = vault.settings.database
    data = database_bytes(database)
    if isinstance(database, Path):
        assert Path(f"{database}-wal").exists()  # the WAL is searched too
    for token in tokens:
        for form in forms_of(token, "sk-aic-"):
            assert form not in data
    # What is stored is the keyed digest, and only that.
    digests = {bytes(r[0]) for r in raw_fetch(database, "SELECT digest FROM api_tokens")}
    keyring = Keyring.load(vault.keyring_file)
    hasher = SecretHasher(keyring.pepper)
    assert digests == {hasher.token_digest(t) for t in tokens}


async def test_auth_service_needs_the_manage_right(vault: VaultHandle) -> None:
    created = await _create(AuthServiceStub(vault.channel("gateway")))
    for caller, code in (
        ("router", grpc.StatusCode.PERMISSION_DENIED),
        (None, grpc.StatusCode.UNAUTHENTICATED),
    ):
        stub = AuthServiceStub(vault.channel(caller))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Authenticate(pb.AuthenticateRequest(token=created.token))
        assert err.value.code() == code
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.CreateToken(pb.CreateTokenRequest(user_id="alice"))
        assert err.value.code() == code


async def test_tokens_survive_a_restart(tmp_path: Path) -> None:
    async with running_vault(tmp_path) as vault:
        created = await _create(AuthServiceStub(vault.channel("gateway")))
    async with running_vault(tmp_path) as vault:
        result = await _authenticate(AuthServiceStub(vault.channel("gateway")), created.token)
        assert result.authenticated and result.token_id == created.info.id
