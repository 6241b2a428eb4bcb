"""The audit log through a real vault: token, session and credential actions, never secrets."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
from aicreds.vault.v1 import audit_pb2, auth_pb2
from aicreds.vault.v1 import credentials_pb2 as cred_pb2
from aicreds.vault.v1.audit_pb2_grpc import AuditServiceStub
from aicreds.vault.v1.auth_pb2_grpc import AuthServiceStub
from aicreds.vault.v1.credentials_pb2_grpc import CredentialServiceStub

from tests.support.vault import VaultHandle, running_vault

SECRET_VALUE = "sk-proj-AUDIT-value-5b1f0e9a77"


@pytest.fixture
async def vault(tmp_path: Path) -> AsyncIterator[VaultHandle]:
    async with running_vault(tmp_path) as handle:
        yield handle


async def _events(vault: VaultHandle, user: str, **kw: int) -> list[audit_pb2.AuditEvent]:
    stub = AuditServiceStub(vault.channel("gateway"))
    response = await stub.ListAuditEvents(audit_pb2.ListAuditEventsRequest(user_id=user, **kw))
    return list(response.events)


async def test_token_and_session_lifecycle_is_audited_without_secrets(vault: VaultHandle) -> None:
    auth = AuthServiceStub(vault.channel("gateway"))
    token = await auth.CreateToken(auth_pb2.CreateTokenRequest(user_id="alice", name="cli"))
    session = await auth.CreateSession(
        auth_pb2.CreateSessionRequest(user_id="alice", token_id=token.info.id)
    )
    await auth.RevokeSession(
        auth_pb2.RevokeSessionRequest(user_id="alice", session=session.session)
    )
    await auth.RevokeToken(auth_pb2.RevokeTokenRequest(user_id="alice", token_id=token.info.id))
    await auth.Authenticate(auth_pb2.AuthenticateRequest(token=token.token))
    events = await _events(vault, "alice")
    assert [(e.action, list(e.keys), e.outcome, e.caller) for e in reversed(events)] == [
        ("tokens.create", [token.info.id], "ok", "gateway"),
        ("sessions.create", [session.session_id], "ok", "gateway"),
        ("sessions.revoke", [session.session_id], "ok", "gateway"),
        ("tokens.revoke", [token.info.id], "ok", "gateway"),
    ]
    assert all(e.user_id == "alice" and e.time.seconds > 0 for e in events)
    ids = [e.id for e in events]
    assert ids == sorted(ids, reverse=True)
    wire = b"".join(e.SerializeToString() for e in events)
    for secret in (token.token, token.token[8:], session.session, session.session[9:]):
        assert secret.encode() not in wire


async def test_failed_requests_are_audited_with_their_reason(vault: VaultHandle) -> None:
    auth = AuthServiceStub(vault.channel("gateway"))
    with pytest.raises(grpc.aio.AioRpcError):
        await auth.CreateToken(
            auth_pb2.CreateTokenRequest(user_id="alice", name="n", scopes=["root"])
        )
    with pytest.raises(grpc.aio.AioRpcError):
        await auth.RevokeToken(auth_pb2.RevokeTokenRequest(user_id="alice", token_id="tok_gone"))
    with pytest.raises(grpc.aio.AioRpcError):
        await auth.CreateSession(
            auth_pb2.CreateSessionRequest(user_id="alice", token_id="tok_gone")
        )
    events = await _events(vault, "alice")
    assert [(e.action, e.outcome) for e in reversed(events)] == [
        ("tokens.create", "invalid_argument"),
        ("tokens.revoke", "token_not_found"),
        ("sessions.create", "token_not_found"),
    ]
    assert list(events[1].keys) == ["tok_gone"]


async def test_credential_changes_share_the_log_without_values(vault: VaultHandle) -> None:
    creds = CredentialServiceStub(vault.channel("gateway"))
    await creds.PutCredential(
        cred_pb2.PutCredentialRequest(user_id="alice", key="openai_api_key", value=SECRET_VALUE)
    )
    (event,) = await _events(vault, "alice")
    assert (event.action, list(event.keys), event.outcome) == (
        "credentials.put",
        ["openai_api_key"],
        "ok",
    )
    assert SECRET_VALUE.encode() not in event.SerializeToString()


async def test_events_are_per_user_and_paged_newest_first(vault: VaultHandle) -> None:
    auth = AuthServiceStub(vault.channel("gateway"))
    for i in range(5):
        await auth.CreateToken(auth_pb2.CreateTokenRequest(user_id="alice", name=f"t{i}"))
    await auth.CreateToken(auth_pb2.CreateTokenRequest(user_id="bob", name="b"))
    everything = await _events(vault, "alice")
    assert len(everything) == 5 and all(e.user_id == "alice" for e in everything)
    first_page = await _events(vault, "alice", limit=2)
    assert [e.id for e in first_page] == [e.id for e in everything[:2]]
    second_page = await _events(vault, "alice", limit=2, before_id=first_page[-1].id)
    assert [e.id for e in second_page] == [e.id for e in everything[2:4]]
    assert [e.user_id for e in await _events(vault, "bob")] == ["bob"]
    assert await _events(vault, "carol") == []


async def test_reading_needs_manage_and_a_valid_request(vault: VaultHandle) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await AuditServiceStub(vault.channel("router")).ListAuditEvents(
            audit_pb2.ListAuditEventsRequest(user_id="alice")
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    for request in (
        audit_pb2.ListAuditEventsRequest(user_id=""),
        audit_pb2.ListAuditEventsRequest(user_id="alice", limit=-1),
        audit_pb2.ListAuditEventsRequest(user_id="alice", before_id=-5),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await AuditServiceStub(vault.channel("gateway")).ListAuditEvents(request)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_no_code_updates_or_deletes_audit_events() -> None:
    services = Path(__file__).resolve().parents[2] / "services"
    pattern = re.compile(r"(UPDATE\s+audit_events|DELETE\s+FROM\s+audit_events)", re.IGNORECASE)
    offenders = [
        str(path) for path in services.rglob("*.py") if pattern.search(path.read_text("utf-8"))
    ]
    assert offenders == []
