"""RouterService.InvokeBuffered over real gRPC: the same call as Invoke, answered once."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import grpc
import grpc.aio
import pytest
from aicreds.router.v1 import router_pb2

from services.router.invocation import MAX_BUFFERED_BODY
from tests.router.conftest import RouterEnv, RouterFactory, warnings_of
from tests.router.fake_vault import FakeVault
from tests.router.invoke_requests import SECRET, invoke_request, setup_openai
from tests.support.fake_upstream import (
    FakeUpstream,
    RecordedRequest,
    Reply,
    echo_handler,
)


def _buffered(max_body_bytes: int = 0, **fields: object) -> router_pb2.InvokeBufferedRequest:
    return router_pb2.InvokeBufferedRequest(
        call=invoke_request(**fields), max_body_bytes=max_body_bytes
    )


async def _fetch(
    env: RouterEnv,
    request: router_pb2.InvokeBufferedRequest,
    *,
    caller: str | None = "gateway",
    timeout: float | None = 10,
) -> tuple[router_pb2.InvokeBufferedResponse, grpc.aio.UnaryUnaryCall]:
    call = env.stub(caller).InvokeBuffered(request, timeout=timeout)
    return await call, call


def _reason(err: grpc.aio.AioRpcError) -> str | None:
    return next((str(v) for k, v in err.trailing_metadata() or () if k == "x-error-reason"), None)


async def test_buffered_substitutes_proxies_and_answers_whole(
    fake_vault: FakeVault, fake_env: RouterEnv, upstream: FakeUpstream
) -> None:
    setup_openai(fake_vault, upstream, {"Authorization": ["Bearer {{credential:openai_api_key}}"]})

    async def pieces(request: RecordedRequest, reply: Reply) -> None:
        await reply.head(
            201,
            [("content-type", "application/json"), ("x-request-id", "up-1"), ("keep-alive", "5")],
        )
        for part in (b'{"id":', b' "x",', b' "ok": true}'):
            await reply.chunk(part)
        await reply.end()

    upstream.handler = pieces
    reply, call = await _fetch(fake_env, _buffered(query="a=1"))
    assert reply.head.status == 201
    headers = [(h.name, h.value) for h in reply.head.headers]
    assert ("content-type", "application/json") in headers and ("x-request-id", "up-1") in headers
    assert "keep-alive" not in {name for name, _ in headers}  # hop-by-hop, as Invoke
    assert reply.body == b'{"id": "x", "ok": true}'
    assert list(reply.warnings) == [] and warnings_of(await call.trailing_metadata()) == []
    (seen,) = upstream.requests
    assert seen.target == "/v1/chat/completions?a=1"
    assert seen.header("authorization") == f"Bearer {SECRET}"
    assert seen.body == b'{"model":"gpt-4o"}'
    assert len(fake_vault.requests) == 1  # exactly one Resolve
    # Preparation is Invoke's: the model prefix is stripped in the body only.
    body = b'{"model":"openai/gpt-4o", "n": 1}'
    upstream.handler = echo_handler
    await _fetch(fake_env, _buffered(provider_name=None, model="openai/gpt-4o", body=body))
    assert upstream.requests[1].body == b'{"model":"gpt-4o", "n": 1}'


async def test_buffered_warnings_in_the_answer_and_the_trailers(
    fake_vault: FakeVault, fake_env: RouterEnv, upstream: FakeUpstream
) -> None:
    setup_openai(
        fake_vault,
        upstream,
        {"Authorization": ["Bearer {{credential:nope}}"], "X-Bad": ["{{ credential:x }}"]},
    )
    reply, call = await _fetch(fake_env, _buffered())
    expected = ["Credential not found: nope", "malformed placeholder"]
    assert reply.head.status == 200
    assert list(reply.warnings) == expected
    assert warnings_of(await call.trailing_metadata()) == expected


async def test_buffered_upstream_http_errors_pass_through(
    fake_vault: FakeVault, fake_env: RouterEnv, upstream: FakeUpstream
) -> None:
    setup_openai(fake_vault, upstream, {})

    async def unauthorized(request: RecordedRequest, reply: Reply) -> None:
        await reply.head(401, [("content-type", "application/json")])
        await reply.chunk(b'{"error":{"message":"Incorrect API key"}}')
        await reply.end()

    upstream.handler = unauthorized
    reply, _ = await _fetch(fake_env, _buffered())
    assert reply.head.status == 401
    assert reply.body == b'{"error":{"message":"Incorrect API key"}}'


async def test_buffered_missing_key_with_error_fails_before_the_upstream(
    fake_vault: FakeVault, fake_env: RouterEnv, upstream: FakeUpstream
) -> None:
    setup_openai(
        fake_vault,
        upstream,
        {"Authorization": ["Bearer {{credential:nope}}"], "X-Bad": ["{{ credential:x }}"]},
        on_missing="error",
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _fetch(fake_env, _buffered())
    err = caught.value
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "nope" in (err.details() or "")
    assert _reason(err) == "credential_not_found"
    assert warnings_of(err.trailing_metadata()) == [
        "Credential not found: nope",
        "malformed placeholder",
    ]
    assert upstream.requests == []


def _refused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("case", "code", "reason"),
    [
        ("unknown model", grpc.StatusCode.NOT_FOUND, "model_not_found"),
        ("bad path", grpc.StatusCode.INVALID_ARGUMENT, "invalid_argument"),
        ("no target", grpc.StatusCode.INVALID_ARGUMENT, "invalid_argument"),
        ("egress refused", grpc.StatusCode.PERMISSION_DENIED, "egress_denied"),
        ("connection refused", grpc.StatusCode.UNAVAILABLE, "upstream_unavailable"),
        ("lost mid-body", grpc.StatusCode.UNAVAILABLE, "upstream_unavailable"),
        ("vault too slow", grpc.StatusCode.UNAVAILABLE, "vault_unavailable"),
    ],
)
async def test_buffered_errors_are_invokes(
    fake_vault: FakeVault,
    fake_env: RouterEnv,
    upstream: FakeUpstream,
    case: str,
    code: grpc.StatusCode,
    reason: str,
) -> None:
    base_url = {
        "egress refused": "http://169.254.169.254/latest",
        "connection refused": f"http://127.0.0.1:{_refused_port()}/v1",
    }.get(case)
    setup_openai(fake_vault, upstream, {}, base_url=base_url)
    request = _buffered()
    if case == "unknown model":
        request = _buffered(provider_name=None, model="claude-9")
    elif case == "bad path":
        request = _buffered(path="/../admin")
    elif case == "no target":
        request = _buffered(provider_name=None)
    elif case == "vault too slow":
        fake_vault.delay = 5  # longer than ROUTER_VAULT_TIMEOUT (2 s in tests)
    elif case == "lost mid-body":

        async def cut(request: RecordedRequest, reply: Reply) -> None:
            await reply.head(200, [("content-type", "application/json")])
            await reply.chunk(b'{"id": ')  # then the connection closes, the body unfinished

        upstream.handler = cut
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _fetch(fake_env, request)
    assert caught.value.code() == code
    assert _reason(caught.value) == reason


@pytest.mark.parametrize(
    ("caller", "code"),
    [
        (None, grpc.StatusCode.UNAUTHENTICATED),
        ("stranger", grpc.StatusCode.UNAUTHENTICATED),
        ("manager", grpc.StatusCode.PERMISSION_DENIED),
    ],
)
async def test_buffered_callers_need_a_valid_token_with_invoke(
    fake_vault: FakeVault,
    fake_env: RouterEnv,
    upstream: FakeUpstream,
    caller: str | None,
    code: grpc.StatusCode,
) -> None:
    setup_openai(fake_vault, upstream, {})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _fetch(fake_env, _buffered(), caller=caller)
    assert caught.value.code() == code
    assert upstream.requests == [] and fake_vault.requests == []
    reply, _ = await _fetch(fake_env, _buffered(), caller="agent")
    assert reply.head.status == 200


async def test_buffered_deadline_and_default_timeout(
    fake_vault: FakeVault, router_factory: RouterFactory, upstream: FakeUpstream
) -> None:
    env = await router_factory(fake_vault.address, fake_vault.token, upstream_timeout=0.5)
    setup_openai(fake_vault, upstream, {})

    async def slow(request: RecordedRequest, reply: Reply) -> None:
        await reply.head(200, [("content-type", "application/json")])
        await reply.chunk(b"{")
        await asyncio.sleep(30)

    upstream.handler = slow
    for timeout in (0.3, None):  # the caller's deadline; the router's default without one
        upstream.disconnected.clear()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _fetch(env, _buffered(), timeout=timeout)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await asyncio.wait_for(upstream.disconnected.wait(), timeout=1)
    assert _reason(caught.value) == "upstream_timeout"


async def test_cancelling_a_buffered_call_disconnects_the_upstream(
    fake_vault: FakeVault, fake_env: RouterEnv, upstream: FakeUpstream
) -> None:
    setup_openai(fake_vault, upstream, {})
    started = asyncio.Event()

    async def endless(request: RecordedRequest, reply: Reply) -> None:
        await reply.head(200, [("content-type", "application/json")])
        started.set()
        while True:
            await reply.chunk(b" ")
            await asyncio.sleep(0.02)

    upstream.handler = endless
    call = fake_env.stub().InvokeBuffered(_buffered(), timeout=30)
    await asyncio.wait_for(started.wait(), timeout=5)
    call.cancel()
    await asyncio.wait_for(upstream.disconnected.wait(), timeout=1)


@pytest.mark.parametrize("size", [1000, 1001])
async def test_buffered_body_limit(
    fake_vault: FakeVault, fake_env: RouterEnv, upstream: FakeUpstream, size: int
) -> None:
    setup_openai(fake_vault, upstream, {})

    async def sized(request: RecordedRequest, reply: Reply) -> None:
        await reply.head(200, [("content-type", "application/octet-stream")])
        await reply.chunk(b"x" * 600)
        await reply.chunk(b"y" * (size - 600))
        await reply.end()

    upstream.handler = sized
    if size <= 1000:
        reply, _ = await _fetch(fake_env, _buffered(max_body_bytes=1000))
        assert reply.body == b"x" * 600 + b"y" * 400
        return
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _fetch(fake_env, _buffered(max_body_bytes=1000))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert _reason(caught.value) == "upstream_unavailable"
    assert "longer than 1000 bytes" in (caught.value.details() or "")


async def test_a_buffered_body_over_the_limit_closes_the_upstream_at_once(
    fake_vault: FakeVault, fake_env: RouterEnv, upstream: FakeUpstream
) -> None:
    setup_openai(fake_vault, upstream, {})

    async def firehose(request: RecordedRequest, reply: Reply) -> None:
        await reply.head(200, [("content-type", "application/octet-stream")])
        while True:
            await reply.chunk(b"x" * 65536)

    upstream.handler = firehose
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _fetch(fake_env, _buffered(max_body_bytes=1 << 20))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    await asyncio.wait_for(upstream.disconnected.wait(), timeout=1)


async def test_buffered_without_a_limit_takes_the_routers_32_mib(
    fake_vault: FakeVault, fake_env: RouterEnv, upstream: FakeUpstream
) -> None:
    setup_openai(fake_vault, upstream, {})
    big = b"z" * (9 * 1024 * 1024)  # over the gateway's 8 MiB, under the router's limit

    async def large(request: RecordedRequest, reply: Reply) -> None:
        await reply.head(200, [("content-type", "application/octet-stream")])
        await reply.chunk(big)
        await reply.end()

    upstream.handler = large
    reply, _ = await _fetch(fake_env, _buffered())
    assert reply.body == big
    assert MAX_BUFFERED_BODY == 32 * 1024 * 1024


async def test_buffered_logs_the_upstream_call_and_no_credential_value(
    fake_vault: FakeVault,
    fake_env: RouterEnv,
    upstream: FakeUpstream,
    all_logs: Callable[[], str],
) -> None:
    setup_openai(
        fake_vault,
        upstream,
        {"Authorization": ["Bearer {{credential:openai_api_key}}", "{{credential:gone}}"]},
    )
    reply, _ = await _fetch(fake_env, _buffered())
    assert SECRET not in repr(reply.head)
    logs = all_logs()
    assert "'method': 'POST'" in logs and "'path': '/v1/chat/completions'" in logs
    assert "'status': 200" in logs and "'outcome': 'ok'" in logs
    assert "Credential not found: gone" in logs
    assert SECRET not in logs and SECRET[:20] not in logs
