"""Tokens minted by a token or a session: never outlive their parent, revoked with it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
from aicreds.vault.v1 import auth_pb2 as pb
from aicreds.vault.v1.auth_pb2_grpc import AuthServiceStub

from services.common.scopes import ALL_SCOPES
from tests.support.vault import running_vault

DAY = 86400


@pytest.fixture
async def auth(tmp_path: Path) -> AsyncIterator[AuthServiceStub]:
    async with running_vault(tmp_path) as handle:
        yield AuthServiceStub(handle.channel("gateway"))


async def _mint(auth: AuthServiceStub, user: str = "alice", **kw: object) -> pb.CreateTokenResponse:
    response: pb.CreateTokenResponse = await auth.CreateToken(
        pb.CreateTokenRequest(user_id=user, name="t", **kw)  # type: ignore[arg-type]
    )
    return response


async def _works(auth: AuthServiceStub, token: pb.CreateTokenResponse) -> bool:
    reply = await auth.Authenticate(pb.AuthenticateRequest(token=token.token))
    return bool(reply.authenticated)


def _expiry(token: pb.CreateTokenResponse) -> float:
    return float(token.info.expires_at.seconds)


async def test_a_child_token_never_outlives_its_parent_token(auth: AuthServiceStub) -> None:
    parent = await _mint(auth, expires_in_seconds=DAY)
    forever = await _mint(auth, parent_token_id=parent.info.id)
    longer = await _mint(auth, parent_token_id=parent.info.id, expires_in_seconds=30 * DAY)
    shorter = await _mint(auth, parent_token_id=parent.info.id, expires_in_seconds=3600)
    assert forever.info.HasField("expires_at") and _expiry(forever) <= _expiry(parent)
    assert _expiry(longer) <= _expiry(parent)
    assert _expiry(shorter) < _expiry(parent) - 3600
    assert forever.info.parent_token_id == parent.info.id
    # A parent that never expires leaves the child's lifetime as asked.
    free = await _mint(auth)
    child = await _mint(auth, parent_token_id=free.info.id)
    assert not child.info.HasField("expires_at")


async def test_a_token_minted_through_a_session_expires_with_the_session(
    auth: AuthServiceStub,
) -> None:
    token = await _mint(auth)
    session = await auth.CreateSession(
        pb.CreateSessionRequest(user_id="alice", token_id=token.info.id, ttl_seconds=600)
    )
    child = await _mint(
        auth,
        parent_token_id=token.info.id,
        parent_session_id=session.session_id,
        expires_in_seconds=30 * DAY,
    )
    assert _expiry(child) <= session.expires_at.seconds
    assert child.info.parent_session_id == session.session_id


async def test_revoking_a_token_revokes_its_children_and_grandchildren(
    auth: AuthServiceStub,
) -> None:
    parent = await _mint(auth)
    child = await _mint(auth, parent_token_id=parent.info.id)
    grandchild = await _mint(auth, parent_token_id=child.info.id)
    session = await auth.CreateSession(
        pb.CreateSessionRequest(user_id="alice", token_id=grandchild.info.id)
    )
    sibling = await _mint(auth)  # not in the family: untouched
    assert all([await _works(auth, t) for t in (parent, child, grandchild, sibling)])

    await auth.RevokeToken(pb.RevokeTokenRequest(user_id="alice", token_id=parent.info.id))

    assert not any([await _works(auth, t) for t in (parent, child, grandchild)])
    assert await _works(auth, sibling)
    reply = await auth.Authenticate(pb.AuthenticateRequest(session=session.session))
    assert not reply.authenticated and reply.failure == pb.AUTH_FAILURE_REVOKED


async def test_logout_revokes_the_tokens_minted_through_the_session(
    auth: AuthServiceStub,
) -> None:
    token = await _mint(auth)
    session = await auth.CreateSession(
        pb.CreateSessionRequest(user_id="alice", token_id=token.info.id)
    )
    other = await auth.CreateSession(
        pb.CreateSessionRequest(user_id="alice", token_id=token.info.id)
    )
    minted = await _mint(auth, parent_token_id=token.info.id, parent_session_id=session.session_id)
    grandchild = await _mint(auth, parent_token_id=minted.info.id)
    by_other = await _mint(auth, parent_token_id=token.info.id, parent_session_id=other.session_id)

    await auth.RevokeSession(pb.RevokeSessionRequest(user_id="alice", session=session.session))

    assert not await _works(auth, minted)
    assert not await _works(auth, grandchild)
    assert await _works(auth, token)  # the session's own token stays
    assert await _works(auth, by_other)


async def test_a_revoked_expired_or_foreign_parent_mints_nothing(auth: AuthServiceStub) -> None:
    revoked = await _mint(auth)
    await auth.RevokeToken(pb.RevokeTokenRequest(user_id="alice", token_id=revoked.info.id))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _mint(auth, parent_token_id=revoked.info.id)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    bobs = await _mint(auth, user="bob")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _mint(auth, parent_token_id=bobs.info.id)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _mint(auth, parent_session_id="ses_0000000000000000")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    listed = await auth.ListTokens(pb.ListTokensRequest(user_id="alice"))
    assert [t.id for t in listed.tokens] == [revoked.info.id]


async def test_a_child_holds_no_scope_its_parent_lacks(auth: AuthServiceStub) -> None:
    manager = await _mint(auth, scopes=["tokens:manage"])
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _mint(auth, parent_token_id=manager.info.id, scopes=list(ALL_SCOPES))
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert dict(info.value.trailing_metadata() or ())["x-error-reason"] == "forbidden"
    for scope in ALL_SCOPES:
        assert (scope in (info.value.details() or "")) is (scope != "tokens:manage")
    listed = await auth.ListTokens(pb.ListTokensRequest(user_id="alice"))
    assert [t.id for t in listed.tokens] == [manager.info.id]  # nothing written
    # None requested: the parent's scopes, not all of them; a subset is granted as asked.
    default = await _mint(auth, parent_token_id=manager.info.id)
    assert list(default.info.scopes) == ["tokens:manage"]
    reader = await _mint(auth, scopes=["credentials:read", "llm:invoke", "tokens:manage"])
    narrowed = await _mint(auth, parent_token_id=reader.info.id, scopes=["llm:invoke"])
    assert list(narrowed.info.scopes) == ["llm:invoke"]
    # Without a parent (the operator command), none requested is every scope.
    assert list((await _mint(auth)).info.scopes) == list(ALL_SCOPES)


async def test_a_child_minted_through_a_session_holds_no_scope_its_token_lacks(
    auth: AuthServiceStub,
) -> None:
    token = await _mint(auth, scopes=["credentials:read", "tokens:manage"])
    session = await auth.CreateSession(
        pb.CreateSessionRequest(user_id="alice", token_id=token.info.id)
    )
    lineage = {"parent_token_id": token.info.id, "parent_session_id": session.session_id}
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _mint(auth, scopes=["credentials:write"], **lineage)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "credentials:write" in (info.value.details() or "")
    child = await _mint(auth, **lineage)
    assert list(child.info.scopes) == ["credentials:read", "tokens:manage"]
