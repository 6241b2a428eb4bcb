"""`CheckProvider` (issue 13, the web UI's Test button): a provider's model list sent with the
user's credentials, answered as an outcome, never with the upstream's body.

Every router here resolves with the conftest's stub table and connects through
`LoopbackOnlyBackend`, so no test sends traffic outside 127.0.0.0/8: the refused addresses are
refused by the policy before any connection, which `backend.connects` shows.
"""

from __future__ import annotations

import asyncio
import datetime
import socket
from collections.abc import Callable

import grpc
import grpc.aio
import pytest
from aicreds.router.v1 import router_pb2
from aicreds.vault.v1 import providers_pb2

from services.router.egress import EgressPolicy
from services.router.invocation import ProviderConfig, Resolution, Router
from services.router.provider_check import CheckOutcome, ProviderChecker
from services.router.transport import UpstreamClient
from tests.router.conftest import RouterEnv, provider, warnings_of
from tests.router.fake_vault import FakeVault
from tests.support.fake_upstream import FakeUpstream, Handler, RecordedRequest, Reply

SECRET = "sk-live-0123456789abcdef-CHECKSECRET"
USER = "user-1"
BODY_MARKER = "UPSTREAM-BODY-MARKER-7f3a"
AUTH = {"Authorization": ["Bearer {{credential:api_key}}"]}


def _models_handler(status_if_wrong: int = 401, status: int | None = None) -> Handler:
    """An upstream whose model list wants `Authorization: Bearer SECRET` (or answers `status`)."""

    async def handle(request: RecordedRequest, reply: Reply) -> None:
        if status is not None:
            code = status
        elif request.method != "GET" or not request.target.endswith("/models"):
            code = 404
        else:
            code = 200 if request.header("authorization") == f"Bearer {SECRET}" else status_if_wrong
        body = f'{{"data": [], "note": "{BODY_MARKER}"}}'.encode()
        await reply.head(
            code, [("content-type", "application/json"), ("content-length", str(len(body)))]
        )
        await reply.chunk(body)
        await reply.end()

    return handle


def _setup(
    vault: FakeVault,
    base_url: str,
    *,
    headers: dict[str, list[str]] | None = None,
    credentials: dict[str, str] | None = None,
    on_missing: str = "warn",
    kind: providers_pb2.ProviderKind = providers_pb2.PROVIDER_KIND_OPENAI,
) -> None:
    vault.providers[USER] = [
        provider(
            "prov", base_url, AUTH if headers is None else headers, on_missing=on_missing, kind=kind
        )
    ]
    vault.credentials[USER] = {"api_key": SECRET} if credentials is None else credentials


async def _check(
    env: RouterEnv, name: str = "prov", caller: str = "gateway"
) -> tuple[router_pb2.CheckProviderResponse, list[str]]:
    call = env.stub(caller).CheckProvider(
        router_pb2.CheckProviderRequest(user_id=USER, provider_name=name), timeout=15
    )
    reply: router_pb2.CheckProviderResponse = await call
    return reply, warnings_of(await call.trailing_metadata())


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_accepted_with_the_right_key(
    fake_vault: FakeVault, fake_env: RouterEnv, upstream: FakeUpstream
) -> None:
    upstream.handler = _models_handler()
    _setup(fake_vault, upstream.base_url + "/v1")
    before = datetime.datetime.now(datetime.UTC)
    reply, trailing = await _check(fake_env)
    assert reply.outcome == router_pb2.CHECK_OUTCOME_ACCEPTED
    assert reply.status == 200
    assert f"127.0.0.1:{upstream.port}" in reply.message
    assert reply.warnings == [] and trailing == []
    checked_at = reply.checked_at.ToDatetime(tzinfo=datetime.UTC)
    assert before - datetime.timedelta(seconds=1) <= checked_at
    assert checked_at <= datetime.datetime.now(datetime.UTC)
    (seen,) = upstream.requests
    assert (seen.method, seen.target, seen.body) == ("GET", "/v1/models", b"")
    assert seen.header("authorization") == f"Bearer {SECRET}"
    assert seen.header("anthropic-version") is None
    assert len(fake_vault.requests) == 1  # one Resolve, as a call


@pytest.mark.parametrize("status", [401, 403])
async def test_a_wrong_key_is_rejected(
    fake_vault: FakeVault, fake_env: RouterEnv, upstream: FakeUpstream, status: int
) -> None:
    upstream.handler = _models_handler(status_if_wrong=status)
    _setup(fake_vault, upstream.base_url + "/v1", credentials={"api_key": "sk-wrong-key-000"})
    reply, _ = await _check(fake_env)
    assert reply.outcome == router_pb2.CHECK_OUTCOME_KEY_REJECTED
    assert reply.status == status
    assert str(status) in reply.message and "rejected" in reply.message
    assert "sk-wrong-key-000" not in str(reply)


@pytest.mark.parametrize("status", [404, 429, 500])
async def test_another_status_is_an_upstream_error(
    fake_vault: FakeVault, fake_env: RouterEnv, upstream: FakeUpstream, status: int
) -> None:
    upstream.handler = _models_handler(status=status)
    _setup(fake_vault, upstream.base_url + "/v1")
    reply, _ = await _check(fake_env)
    assert reply.outcome == router_pb2.CHECK_OUTCOME_UPSTREAM_ERROR
    assert reply.status == status
    assert str(status) in reply.message


async def test_a_closed_port_is_unreachable(fake_vault: FakeVault, fake_env: RouterEnv) -> None:
    port = _closed_port()
    _setup(fake_vault, f"http://127.0.0.1:{port}/v1")
    reply, _ = await _check(fake_env)
    assert reply.outcome == router_pb2.CHECK_OUTCOME_UNREACHABLE
    assert reply.status == 0
    assert f"127.0.0.1:{port}" in reply.message
    assert fake_env.backend.connects == [("127.0.0.1", port)]  # it did try


async def test_a_name_that_does_not_resolve_is_unreachable(
    fake_vault: FakeVault, fake_env: RouterEnv
) -> None:
    _setup(fake_vault, "http://nowhere.test/v1")  # not in the stub resolver's table
    reply, _ = await _check(fake_env)
    assert reply.outcome == router_pb2.CHECK_OUTCOME_UNREACHABLE
    assert fake_env.backend.connects == []


@pytest.mark.parametrize(
    "base_url",
    ["http://10.0.0.1/v1", "http://127.0.0.2:8080/v1", "http://api.internal.test/v1"],
)
async def test_an_address_the_policy_refuses_gets_nothing_sent(
    fake_vault: FakeVault, fake_env: RouterEnv, upstream: FakeUpstream, base_url: str
) -> None:
    # fake_env allows 127.0.0.1 only; these are private or other loopback addresses.
    _setup(fake_vault, base_url)
    reply, _ = await _check(fake_env)
    assert reply.outcome == router_pb2.CHECK_OUTCOME_REFUSED_BY_POLICY
    assert reply.status == 0
    assert "egress policy" in reply.message
    assert "10.20.30.40" not in reply.message  # the host, not the address it resolved to
    assert fake_env.backend.connects == []
    assert upstream.requests == []


async def test_a_missing_credential_with_on_missing_error_sends_nothing(
    fake_vault: FakeVault, fake_env: RouterEnv, upstream: FakeUpstream
) -> None:
    upstream.handler = _models_handler()
    _setup(fake_vault, upstream.base_url + "/v1", credentials={}, on_missing="error")
    reply, trailing = await _check(fake_env)
    assert reply.outcome == router_pb2.CHECK_OUTCOME_CREDENTIAL_MISSING
    assert reply.status == 0
    assert "api_key" in reply.message
    assert list(reply.warnings) == ["Credential not found: api_key"] == trailing
    assert upstream.requests == []
    assert fake_env.backend.connects == []


async def test_a_missing_credential_with_on_missing_warn_is_sent_and_warned(
    fake_vault: FakeVault, fake_env: RouterEnv, upstream: FakeUpstream
) -> None:
    upstream.handler = _models_handler()
    _setup(fake_vault, upstream.base_url + "/v1", credentials={})
    reply, trailing = await _check(fake_env)
    assert reply.outcome == router_pb2.CHECK_OUTCOME_KEY_REJECTED
    assert list(reply.warnings) == ["Credential not found: api_key"] == trailing
    # As a call: the placeholder is left unreplaced and sent.
    assert upstream.requests[0].header("authorization") == "Bearer {{credential:api_key}}"


async def test_anthropic_lists_models_under_v1_with_a_version(
    fake_vault: FakeVault, fake_env: RouterEnv, upstream: FakeUpstream
) -> None:
    upstream.handler = _models_handler(status=200)
    _setup(
        fake_vault,
        upstream.base_url,
        headers={"x-api-key": ["{{credential:api_key}}"]},
        kind=providers_pb2.PROVIDER_KIND_ANTHROPIC,
    )
    reply, _ = await _check(fake_env)
    assert reply.outcome == router_pb2.CHECK_OUTCOME_ACCEPTED
    (seen,) = upstream.requests
    assert (seen.method, seen.target) == ("GET", "/v1/models")
    assert seen.header("x-api-key") == SECRET
    assert seen.header_values("anthropic-version") == ["2023-06-01"]


async def test_a_provider_anthropic_version_wins(
    fake_vault: FakeVault, fake_env: RouterEnv, upstream: FakeUpstream
) -> None:
    upstream.handler = _models_handler(status=200)
    _setup(
        fake_vault,
        upstream.base_url,
        headers={"anthropic-version": ["2024-01-01"]},
        kind=providers_pb2.PROVIDER_KIND_ANTHROPIC,
    )
    await _check(fake_env)
    assert upstream.requests[0].header_values("anthropic-version") == ["2024-01-01"]


async def test_custom_lists_models_under_its_base_url(
    fake_vault: FakeVault, fake_env: RouterEnv, upstream: FakeUpstream
) -> None:
    upstream.handler = _models_handler()
    _setup(fake_vault, upstream.base_url + "/api", kind=providers_pb2.PROVIDER_KIND_CUSTOM)
    reply, _ = await _check(fake_env)
    assert reply.outcome == router_pb2.CHECK_OUTCOME_ACCEPTED
    assert upstream.requests[0].target == "/api/models"


async def test_a_long_body_is_dropped_and_the_check_still_answers(
    fake_vault: FakeVault, fake_env: RouterEnv, upstream: FakeUpstream
) -> None:
    async def huge(request: RecordedRequest, reply: Reply) -> None:
        await reply.head(200, [("content-length", str(4 * 1024 * 1024))])
        for _ in range(64):
            await reply.chunk(b"x" * 65536)
        await reply.end()

    upstream.handler = huge
    _setup(fake_vault, upstream.base_url + "/v1")
    reply, _ = await _check(fake_env)
    assert reply.outcome == router_pb2.CHECK_OUTCOME_ACCEPTED
    assert reply.ByteSize() < 1024


async def test_neither_the_body_nor_the_secret_is_returned_or_logged(
    fake_vault: FakeVault,
    fake_env: RouterEnv,
    upstream: FakeUpstream,
    all_logs: Callable[[], str],
) -> None:
    for status in (200, 401, 500):
        upstream.handler = _models_handler(status=status)
        _setup(fake_vault, upstream.base_url + "/v1?api-version=QUERYSECRET")
        reply, trailing = await _check(fake_env)
        shown = f"{reply}{reply!r}{trailing}"
        for forbidden in (BODY_MARKER, SECRET, "QUERYSECRET", "/v1/models"):
            assert forbidden not in shown
    logs = all_logs()
    assert "provider check" in logs
    assert BODY_MARKER not in logs
    assert SECRET not in logs
    assert "QUERYSECRET" not in logs


async def test_an_unknown_provider_is_not_found(fake_vault: FakeVault, fake_env: RouterEnv) -> None:
    _setup(fake_vault, "http://127.0.0.1:1/v1")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _check(fake_env, name="nope")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_missing_provider_name_is_invalid(fake_env: RouterEnv) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _check(fake_env, name="")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("caller", "code"),
    [
        (None, grpc.StatusCode.UNAUTHENTICATED),
        ("manager", grpc.StatusCode.PERMISSION_DENIED),
    ],
)
async def test_callers_need_the_invoke_right(
    fake_vault: FakeVault,
    fake_env: RouterEnv,
    upstream: FakeUpstream,
    caller: str | None,
    code: grpc.StatusCode,
) -> None:
    _setup(fake_vault, upstream.base_url + "/v1")
    stub = fake_env.stub(caller)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CheckProvider(
            router_pb2.CheckProviderRequest(user_id=USER, provider_name="prov"), timeout=5
        )
    assert caught.value.code() == code
    assert upstream.requests == []
    assert fake_vault.requests == []


async def test_an_internal_caller_checks_the_same_way(
    fake_vault: FakeVault, fake_env: RouterEnv, upstream: FakeUpstream
) -> None:
    upstream.handler = _models_handler()
    _setup(fake_vault, upstream.base_url + "/v1")
    reply, _ = await _check(fake_env, caller="agent")
    assert reply.outcome == router_pb2.CHECK_OUTCOME_ACCEPTED


class _OneProvider:
    """A `ResolveSource` answering every Resolve with one provider and no credentials."""

    def __init__(self, base_url: str) -> None:
        self.provider = ProviderConfig(name="prov", base_url=base_url, headers=(), kind="openai")

    async def resolve(
        self, user_id: str, *, provider_name: str | None, model: str | None, timeout: float
    ) -> Resolution:
        return Resolution(provider=self.provider, values={})


async def test_an_upstream_that_does_not_answer_in_time_is_unreachable(
    upstream: FakeUpstream,
) -> None:
    never = asyncio.Event()

    async def silent(request: RecordedRequest, reply: Reply) -> None:
        await never.wait()

    upstream.handler = silent
    client = UpstreamClient(EgressPolicy.from_setting("127.0.0.1"), connect_timeout=2)
    checker = ProviderChecker(Router(_OneProvider(upstream.base_url + "/v1"), client, 2), 0.3)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        # The caller's deadline is far away: the check's own bound ends it.
        check = await checker.check(USER, "prov", deadline=started + 60)
        assert loop.time() - started < 5
    finally:
        await client.aclose()
    assert check.outcome is CheckOutcome.UNREACHABLE
    assert (check.status, check.message) == (0, f"127.0.0.1:{upstream.port} did not answer in time")
    assert len(upstream.requests) == 1
