"""Browser sessions through a real vault: made from a token, hashed, expiring, revocable."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
from aicreds.vault.v1 import auth_pb2 as pb
from aicreds.vault.v1.auth_pb2_grpc import AuthServiceStub

from services.common.logging import JsonFormatter
from services.vault.keyring import Keyring
from services.vault.sessions import DEFAULT_SESSION_TTL, is_well_formed_session
from services.vault.tokens import SecretHasher, new_token
from tests.support.databases import raw_fetch
from tests.support.vault import VaultHandle, running_vault
from tests.vault._disk import age, database_bytes, forms_of


@pytest.fixture
async def vault(tmp_path: Path) -> AsyncIterator[VaultHandle]:
    async with running_vault(tmp_path) as handle:
        yield handle


@pytest.fixture
def auth(vault: VaultHandle) -> AuthServiceStub:
    return AuthServiceStub(vault.channel("gateway"))


async def _token(
    auth: AuthServiceStub, user: str = "alice", **kw: object
) -> pb.CreateTokenResponse:
    response: pb.CreateTokenResponse = await auth.CreateToken(
        pb.CreateTokenRequest(user_id=user, name="browser", **kw)  # type: ignore[arg-type]
    )
    return response


async def _session(
    auth: AuthServiceStub, token: pb.CreateTokenResponse, ttl: int = 0
) -> pb.CreateSessionResponse:
    response: pb.CreateSessionResponse = await auth.CreateSession(
        pb.CreateSessionRequest(user_id=token.info.user_id, token_id=token.info.id, ttl_seconds=ttl)
    )
    return response


async def _check(auth: AuthServiceStub, session: str) -> pb.AuthenticateResponse:
    response: pb.AuthenticateResponse = await auth.Authenticate(
        pb.AuthenticateRequest(session=session)
    )
    return response


async def test_a_session_authenticates_as_its_tokens_user_and_scopes(
    auth: AuthServiceStub,
) -> None:
    token = await _token(auth, scopes=["credentials:read", "providers:read"])
    created = await _session(auth, token)
    assert is_well_formed_session(created.session) and created.session_id.startswith("ses_")
    assert abs(created.expires_at.ToSeconds() - (time.time() + DEFAULT_SESSION_TTL)) < 5
    result = await _check(auth, created.session)
    assert result.authenticated
    assert (result.user_id, result.token_id, result.token_prefix, result.session_id) == (
        "alice",
        token.info.id,
        token.token[:8],
        created.session_id,
    )
    assert list(result.scopes) == ["credentials:read", "providers:read"]
    assert result.expires_at == created.expires_at
    # A session is not a token, and a token is not a session.
    token_as_session = await _check(auth, token.token)
    assert token_as_session.failure == pb.AUTH_FAILURE_MALFORMED
    session_as_token = await auth.Authenticate(pb.AuthenticateRequest(token=created.session))
    assert session_as_token.failure == pb.AUTH_FAILURE_MALFORMED


async def test_session_lifetime_is_capped_by_the_tokens_expiry(auth: AuthServiceStub) -> None:
    token = await _token(auth, expires_in_seconds=120)
    created = await _session(auth, token, ttl=3600)
    assert created.expires_at == token.info.expires_at
    short = await _session(auth, token, ttl=30)
    assert abs(short.expires_at.ToSeconds() - (time.time() + 30)) < 5


async def test_logout_ends_the_session_once(auth: AuthServiceStub) -> None:
    token = await _token(auth)
    created = await _session(auth, token)
    other = await _session(auth, token)
    wrong_user = await auth.RevokeSession(
        pb.RevokeSessionRequest(user_id="bob", session=created.session)
    )
    assert not wrong_user.revoked and (await _check(auth, created.session)).authenticated
    ended = await auth.RevokeSession(
        pb.RevokeSessionRequest(user_id="alice", session=created.session)
    )
    assert ended.revoked
    result = await _check(auth, created.session)
    assert not result.authenticated and result.failure == pb.AUTH_FAILURE_REVOKED
    again = await auth.RevokeSession(
        pb.RevokeSessionRequest(user_id="alice", session=created.session)
    )
    assert not again.revoked
    junk = await auth.RevokeSession(pb.RevokeSessionRequest(user_id="alice", session="junk"))
    assert not junk.revoked
    assert (await _check(auth, other.session)).authenticated


async def test_revoking_the_token_ends_its_sessions(auth: AuthServiceStub) -> None:
    token = await _token(auth)
    sessions = [await _session(auth, token) for _ in range(2)]
    unrelated = await _session(auth, await _token(auth))
    await auth.RevokeToken(pb.RevokeTokenRequest(user_id="alice", token_id=token.info.id))
    for created in sessions:
        assert (await _check(auth, created.session)).failure == pb.AUTH_FAILURE_REVOKED
        # Ended with the token, in the same transaction: there is no live session to log out.
        logout = await auth.RevokeSession(
            pb.RevokeSessionRequest(user_id="alice", session=created.session)
        )
        assert not logout.revoked
    assert (await _check(auth, unrelated.session)).authenticated


async def test_expired_malformed_and_unknown_sessions_fail_with_distinct_reasons(
    vault: VaultHandle, auth: AuthServiceStub
) -> None:
    token = await _token(auth)
    short = await _session(auth, token, ttl=60)
    assert (await _check(auth, short.session)).authenticated
    age(vault.settings.database, "sessions", short.session_id, 50)
    assert (await _check(auth, short.session)).authenticated  # ten seconds to go
    age(vault.settings.database, "sessions", short.session_id, 11)
    expired = await _check(auth, short.session)
    assert expired.failure == pb.AUTH_FAILURE_EXPIRED and expired.user_id == ""
    malformed = await _check(auth, "aic-sess-short")
    assert malformed.failure == pb.AUTH_FAILURE_MALFORMED
    unknown = await _check(auth, "aic-sess-" + "A" * 43)
    assert unknown.failure == pb.AUTH_FAILURE_UNKNOWN


async def test_a_session_ends_when_its_token_expires(
    vault: VaultHandle, auth: AuthServiceStub
) -> None:
    token = await _token(auth, expires_in_seconds=60)
    created = await _session(auth, token, ttl=3600)
    # The session's own expiry is capped at the token's; only the token is aged here, so it is
    # the token's expiry that ends the session.
    assert created.expires_at == token.info.expires_at
    age(vault.settings.database, "api_tokens", token.info.id, 61)
    assert (await _check(auth, created.session)).failure == pb.AUTH_FAILURE_EXPIRED


async def test_sessions_are_only_made_from_the_users_live_tokens(auth: AuthServiceStub) -> None:
    token = await _token(auth)
    cases = [
        (pb.CreateSessionRequest(user_id="bob", token_id=token.info.id), "NOT_FOUND"),
        (pb.CreateSessionRequest(user_id="alice", token_id="tok_nope"), "NOT_FOUND"),
        (
            pb.CreateSessionRequest(user_id="alice", token_id=token.info.id, ttl_seconds=-1),
            "INVALID_ARGUMENT",
        ),
    ]
    await auth.RevokeToken(pb.RevokeTokenRequest(user_id="alice", token_id=token.info.id))
    cases.append(
        (pb.CreateSessionRequest(user_id="alice", token_id=token.info.id), "UNAUTHENTICATED")
    )
    for request, code in cases:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await auth.CreateSession(request)
        assert err.value.code().name == code


async def test_the_database_holds_no_session_in_any_greppable_form(vault: VaultHandle) -> None:
    auth = AuthServiceStub(vault.channel("gateway"))
    token = await _token(auth)
    sessions = [(await _session(auth, token)).session for _ in range(3)]
    for session in sessions:
        assert (await _check(auth, session)).authenticated
    await auth.RevokeSession(pb.RevokeSessionRequest(user_id="alice", session=sessions[0]))
    data = database_bytes(vault.settings.database)
    for secret in (*sessions, token.token):
        prefix = "sk-aic-" if secret.startswith("sk-aic-") else "aic-sess-"
        for form in forms_of(secret, prefix):
            assert form not in data
    digests = {
        bytes(r[0]) for r in raw_fetch(vault.settings.database, "SELECT digest FROM sessions")
    }
    hasher = SecretHasher(Keyring.load(vault.keyring_file).pepper)
    assert digests == {hasher.session_digest(s) for s in sessions}
    assert all(digest in data for digest in digests)  # the search does see the stored blobs


async def test_no_token_or_session_reaches_any_log_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    presented = [new_token(), "aic-sess-" + "Z" * 43, "sk-aic-" + "m" * 20]
    async with running_vault(tmp_path) as vault:
        auth = AuthServiceStub(vault.channel("gateway"))
        token = await _token(auth)
        session = await _session(auth, token)
        presented += [token.token, session.session]
        for secret in presented:
            await auth.Authenticate(pb.AuthenticateRequest(token=secret))
            await auth.Authenticate(pb.AuthenticateRequest(session=secret))
        await auth.RevokeSession(pb.RevokeSessionRequest(user_id="alice", session=session.session))
        await auth.RevokeToken(pb.RevokeTokenRequest(user_id="alice", token_id=token.info.id))
        await auth.Authenticate(pb.AuthenticateRequest(token=token.token))
        with pytest.raises(grpc.aio.AioRpcError):
            await auth.CreateToken(
                pb.CreateTokenRequest(user_id="alice", name="n", scopes=[token.token])
            )
    formatter = JsonFormatter("vault")
    logged = "\n".join(
        formatter.format(r) + r.getMessage() + repr(r.__dict__) for r in caplog.records
    )
    assert "rpc" in logged  # the access log was captured
    for secret in presented:
        body = secret.split("-", 2)[-1]
        assert secret not in logged and body not in logged
