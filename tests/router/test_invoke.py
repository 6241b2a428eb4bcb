"""RouterService.Invoke (streamed) over real gRPC, in front of a controllable vault and a real
upstream.

The same behaviour against the real vault is in `test_end_to_end.py`; this module covers what
needs control over the vault (slow, stopped) and the finer points of the RPC.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import grpc
import grpc.aio
import pytest
from aicreds.router.v1 import router_pb2
from aicreds.vault.v1 import providers_pb2

from tests.router.conftest import RouterEnv, RouterFactory, warnings_of
from tests.router.fake_vault import FakeVault
from tests.router.invoke_requests import SECRET, USER, invoke_request, setup_openai
from tests.support.fake_upstream import (
    FakeUpstream,
    RecordedRequest,
    Reply,
    sse_event,
)


async def test_invoke_substitutes_and_proxies(
    fake_vault: FakeVault, fake_env: RouterEnv, upstream: FakeUpstream
) -> None:
    setup_openai(fake_vault, upstream, {"Authorization": ["Bearer {{credential:openai_api_key}}"]})
    answer = await fake_env.invoke(invoke_request(query="a=1&b=2"))
    assert answer.status == 200
    assert answer.warnings == []
    (seen,) = upstream.requests
    assert seen.target == "/v1/chat/completions?a=1&b=2"
    assert seen.header("authorization") == f"Bearer {SECRET}"
    assert seen.body == b'{"model":"gpt-4o"}'
    assert fake_vault.requests[0].provider_name == "openai"  # exactly one Resolve
    assert len(fake_vault.requests) == 1


async def test_client_credentials_never_reach_the_upstream(
    fake_vault: FakeVault, fake_env: RouterEnv, upstream: FakeUpstream
) -> None:
    setup_openai(fake_vault, upstream, {"X-Api-Key": ["{{credential:openai_api_key}}"]})
    client_headers = [
        ("Authorization", "Bearer sk-aic-client-token"),
        ("x-api-key", "sk-aic-client-token"),
        ("Cookie", "aicreds_session=abc"),
        ("Content-Type", "application/json"),
        ("anthropic-version", "2023-06-01"),
        ("X-Forwarded-For", "1.2.3.4"),
        ("User-Agent", "café-client/1"),
    ]
    headers = [router_pb2.Header(name=n, value=v) for n, v in client_headers]
    await fake_env.invoke(invoke_request(headers=headers))
    (seen,) = upstream.requests
    sent = {name.lower() for name, _ in seen.headers}
    assert "authorization" not in sent and "cookie" not in sent and "x-forwarded-for" not in sent
    assert seen.header_values("x-api-key") == [SECRET]
    assert seen.header("content-type") == "application/json"
    assert seen.header("anthropic-version") == "2023-06-01"
    assert seen.header("user-agent") == "café-client/1"
    assert "sk-aic-client-token" not in repr(seen.headers)


async def test_missing_key_with_warn_leaves_the_placeholder(
    fake_vault: FakeVault, fake_env: RouterEnv, upstream: FakeUpstream
) -> None:
    setup_openai(fake_vault, upstream, {"Authorization": ["Bearer {{credential:nope}}"]})
    answer = await fake_env.invoke(invoke_request())
    assert answer.status == 200
    assert answer.warnings == ["Credential not found: nope"]
    assert upstream.requests[0].header("authorization") == "Bearer {{credential:nope}}"
    # Also ahead of the first message, for an HTTP edge that must send headers first.
    call = fake_env.stub().Invoke(invoke_request(), timeout=5)
    assert warnings_of(await call.initial_metadata()) == ["Credential not found: nope"]
    async for _ in call:
        pass


async def test_missing_key_with_error_fails_before_the_upstream(
    fake_vault: FakeVault, fake_env: RouterEnv, upstream: FakeUpstream
) -> None:
    setup_openai(
        fake_vault,
        upstream,
        {"Authorization": ["Bearer {{credential:nope}}"], "X-Bad": ["{{ credential:x }}"]},
        on_missing="error",
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await fake_env.invoke(invoke_request())
    err = caught.value
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "nope" in (err.details() or "")
    trailers = err.trailing_metadata() or ()
    assert ("x-error-reason", "credential_not_found") in tuple(trailers)
    assert warnings_of(trailers) == ["Credential not found: nope", "malformed placeholder"]
    assert upstream.requests == []


async def test_model_prefix_is_stripped_in_the_body_only(
    fake_vault: FakeVault, fake_env: RouterEnv, upstream: FakeUpstream
) -> None:
    setup_openai(fake_vault, upstream, {})
    body = b'{"messages": [{"model": "x"}],\n "model":"openai/gpt-4o", "temperature": 0.50}'
    await fake_env.invoke(invoke_request(provider_name=None, model="openai/gpt-4o", body=body))
    assert upstream.requests[0].body == body.replace(b'"openai/gpt-4o"', b'"gpt-4o"')
    # Selected by a model the provider lists: the body goes byte for byte.
    await fake_env.invoke(invoke_request(provider_name=None, model="gpt-4o", body=body))
    assert upstream.requests[1].body == body


async def test_unknown_model_is_not_found(
    fake_vault: FakeVault, fake_env: RouterEnv, upstream: FakeUpstream
) -> None:
    setup_openai(fake_vault, upstream, {})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await fake_env.invoke(invoke_request(provider_name=None, model="claude-9"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert ("x-error-reason", "model_not_found") in tuple(caught.value.trailing_metadata() or ())


async def test_upstream_errors_pass_through(
    fake_vault: FakeVault, fake_env: RouterEnv, upstream: FakeUpstream
) -> None:
    setup_openai(fake_vault, upstream, {})

    async def unauthorized(request: RecordedRequest, reply: Reply) -> None:
        await reply.head(401, [("content-type", "application/json")])
        await reply.chunk(b'{"error":{"message":"Incorrect API key"}}')
        await reply.end()

    upstream.handler = unauthorized
    answer = await fake_env.invoke(invoke_request())
    assert answer.status == 401
    assert answer.body == b'{"error":{"message":"Incorrect API key"}}'


async def test_first_chunk_reaches_the_caller_before_the_upstream_sends_more(
    fake_vault: FakeVault, fake_env: RouterEnv, upstream: FakeUpstream
) -> None:
    setup_openai(fake_vault, upstream, {})
    gate = asyncio.Event()

    async def sse(request: RecordedRequest, reply: Reply) -> None:
        await reply.head(200, [("content-type", "text/event-stream")])
        await reply.chunk(sse_event(0))
        await gate.wait()
        for n in range(1, 50):
            await reply.chunk(sse_event(n))
            await asyncio.sleep(0)
        await reply.end()

    upstream.handler = sse
    call = fake_env.stub().Invoke(invoke_request(), timeout=10)
    head = await call.read()
    assert head.head.status == 200
    assert ("content-type", "text/event-stream") in [(h.name, h.value) for h in head.head.headers]
    first = await call.read()
    assert first.chunk == sse_event(0)
    gate.set()  # only now may the upstream send the rest
    body = first.chunk
    # read() to the end: a call on grpc.aio's direct path (no client interceptor) refuses
    # iteration after read().
    while (message := await call.read()) is not grpc.aio.EOF:
        body += message.chunk
    assert body == b"".join(sse_event(n) for n in range(50))
    assert await call.code() == grpc.StatusCode.OK


async def test_cancelling_the_caller_disconnects_the_upstream(
    fake_vault: FakeVault, fake_env: RouterEnv, upstream: FakeUpstream
) -> None:
    setup_openai(fake_vault, upstream, {})

    async def endless(request: RecordedRequest, reply: Reply) -> None:
        await reply.head(200, [("content-type", "text/event-stream")])
        n = 0
        while True:
            await reply.chunk(sse_event(n))
            n += 1
            await asyncio.sleep(0.02)

    upstream.handler = endless
    call = fake_env.stub().Invoke(invoke_request(), timeout=30)
    await call.read()
    await call.read()
    call.cancel()
    await asyncio.wait_for(upstream.disconnected.wait(), timeout=1)


async def test_an_upstream_slower_than_the_deadline(
    fake_vault: FakeVault, fake_env: RouterEnv, upstream: FakeUpstream
) -> None:
    setup_openai(fake_vault, upstream, {})

    async def slow(request: RecordedRequest, reply: Reply) -> None:
        await asyncio.sleep(30)

    upstream.handler = slow
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await fake_env.invoke(invoke_request(), timeout=0.5)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await asyncio.wait_for(upstream.disconnected.wait(), timeout=1)


async def test_the_router_default_timeout_applies_without_a_deadline(
    fake_vault: FakeVault, router_factory: RouterFactory, upstream: FakeUpstream
) -> None:
    env = await router_factory(fake_vault.address, fake_vault.token, upstream_timeout=0.5)
    setup_openai(fake_vault, upstream, {})

    async def slow(request: RecordedRequest, reply: Reply) -> None:
        await asyncio.sleep(30)

    upstream.handler = slow
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in env.stub().Invoke(invoke_request()):  # no deadline
            pass
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert ("x-error-reason", "upstream_timeout") in tuple(caught.value.trailing_metadata() or ())


async def test_a_refused_connection_is_unavailable(
    fake_vault: FakeVault, fake_env: RouterEnv, upstream: FakeUpstream
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    setup_openai(fake_vault, upstream, {}, base_url=f"http://127.0.0.1:{port}/v1")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await fake_env.invoke(invoke_request())
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert ("x-error-reason", "upstream_unavailable") in tuple(
        caught.value.trailing_metadata() or ()
    )


async def test_vault_down_then_back(
    fake_vault: FakeVault, fake_env: RouterEnv, upstream: FakeUpstream
) -> None:
    setup_openai(fake_vault, upstream, {})
    assert (await fake_env.invoke(invoke_request())).status == 200
    await fake_vault.stop()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await fake_env.invoke(invoke_request())
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "vault" in (caught.value.details() or "")
    assert ("x-error-reason", "vault_unavailable") in tuple(caught.value.trailing_metadata() or ())
    await fake_vault.start()  # same port; the router is not restarted
    for _ in range(50):
        try:
            assert (await fake_env.invoke(invoke_request())).status == 200
            break
        except grpc.aio.AioRpcError as err:
            assert err.code() == grpc.StatusCode.UNAVAILABLE
            await asyncio.sleep(0.1)
    else:
        pytest.fail("the router did not reach the vault again")


async def test_a_slow_vault_is_unavailable(
    fake_vault: FakeVault, fake_env: RouterEnv, upstream: FakeUpstream
) -> None:
    setup_openai(fake_vault, upstream, {})
    fake_vault.delay = 5  # longer than ROUTER_VAULT_TIMEOUT (2 s in tests)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await fake_env.invoke(invoke_request(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize(
    "base_url",
    [
        "http://169.254.169.254/latest",
        "http://10.0.0.1/v1",
        "http://[::1]:8080/v1",
        "http://0.0.0.0/v1",
        "http://api.internal.test/v1",
    ],
)
async def test_egress_refused_before_anything_is_sent(
    fake_vault: FakeVault, fake_env: RouterEnv, upstream: FakeUpstream, base_url: str
) -> None:
    setup_openai(fake_vault, upstream, {}, base_url=base_url)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await fake_env.invoke(invoke_request())
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert ("x-error-reason", "egress_denied") in tuple(caught.value.trailing_metadata() or ())
    assert upstream.requests == []
    assert fake_env.backend.connects == []


async def test_loopback_refused_without_the_allowlist(
    fake_vault: FakeVault, router_factory: RouterFactory, upstream: FakeUpstream
) -> None:
    env = await router_factory(fake_vault.address, fake_vault.token, egress_allow="")
    setup_openai(fake_vault, upstream, {})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await env.invoke(invoke_request())
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert upstream.requests == []


async def test_a_host_name_on_the_allowlist(
    fake_vault: FakeVault, router_factory: RouterFactory, upstream: FakeUpstream
) -> None:
    env = await router_factory(fake_vault.address, fake_vault.token, egress_allow="loopback.test")
    setup_openai(fake_vault, upstream, {}, base_url=f"http://loopback.test:{upstream.port}/v1")
    assert (await env.invoke(invoke_request())).status == 200
    assert upstream.requests[0].header("host") == f"loopback.test:{upstream.port}"


@pytest.mark.parametrize(
    ("caller", "code"),
    [
        (None, grpc.StatusCode.UNAUTHENTICATED),
        ("stranger", grpc.StatusCode.UNAUTHENTICATED),
        ("manager", grpc.StatusCode.PERMISSION_DENIED),
    ],
)
async def test_callers_need_a_valid_token_with_invoke(
    fake_vault: FakeVault,
    fake_env: RouterEnv,
    upstream: FakeUpstream,
    caller: str | None,
    code: grpc.StatusCode,
) -> None:
    setup_openai(fake_vault, upstream, {})
    stub = fake_env.stub(caller)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stub.Invoke(invoke_request(), timeout=5):
            pass
    assert caught.value.code() == code
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Preview(router_pb2.PreviewRequest(user_id=USER, provider_name="openai"))
    assert caught.value.code() == code
    assert upstream.requests == [] and fake_vault.requests == []


async def test_an_internal_agent_with_invoke_may_call(
    fake_vault: FakeVault, fake_env: RouterEnv, upstream: FakeUpstream
) -> None:
    setup_openai(fake_vault, upstream, {})
    assert (await fake_env.invoke(invoke_request(), caller="agent")).status == 200


async def test_preview_masks_substituted_values_and_sends_nothing(
    fake_vault: FakeVault, fake_env: RouterEnv, upstream: FakeUpstream
) -> None:
    setup_openai(
        fake_vault,
        upstream,
        {
            "Authorization": ["Bearer {{credential:openai_api_key}}"],
            "OpenAI-Organization": ["{{credential:org}}"],
            "X-Literal-Token": ["tok-literal-secret"],
            "X-Missing": ["{{credential:nope}}", "{{Credential:bad}}"],
        },
    )
    reply = await fake_env.stub().Preview(
        router_pb2.PreviewRequest(user_id=USER, provider_name="openai"), timeout=5
    )
    assert [(h.name, h.value) for h in reply.headers] == [
        ("Authorization", "Bearer sk-...CRET"),
        ("OpenAI-Organization", "MASKED"),
        ("X-Literal-Token", "MASKED"),
        ("X-Missing", "{{credential:nope}}"),
        ("X-Missing", "{{Credential:bad}}"),
    ]
    assert list(reply.warnings) == ["Credential not found: nope", "malformed placeholder"]
    assert upstream.requests == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("path", "/../admin"),
        ("path", "/x#frag"),
        ("path", "/chat?key=1"),
        ("method", "GET POST"),
        ("query", "a=1 2"),
    ],
)
async def test_bad_requests_are_invalid_arguments(
    fake_vault: FakeVault,
    fake_env: RouterEnv,
    upstream: FakeUpstream,
    field: str,
    value: str,
) -> None:
    setup_openai(fake_vault, upstream, {})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await fake_env.invoke(invoke_request(**{field: value}))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert upstream.requests == []


async def test_no_credential_value_in_any_log_record(
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
    await fake_env.invoke(invoke_request())
    await fake_env.stub().Preview(router_pb2.PreviewRequest(user_id=USER, provider_name="openai"))
    fake_vault.providers[USER][0].on_missing_credential = providers_pb2.ON_MISSING_CREDENTIAL_ERROR
    with pytest.raises(grpc.aio.AioRpcError):
        await fake_env.invoke(invoke_request())
    logs = all_logs()
    assert "Credential not found: gone" in logs  # the warning is logged, by key name
    assert "'path': '/v1/chat/completions'" in logs and "'status': 200" in logs
    assert SECRET not in logs and SECRET[:20] not in logs


async def test_cancel_while_the_router_waits_to_send_disconnects_the_upstream(
    fake_vault: FakeVault, fake_env: RouterEnv, upstream: FakeUpstream
) -> None:
    """The caller stops reading, so the router is parked sending to it; then it cancels."""
    setup_openai(fake_vault, upstream, {})

    async def firehose(request: RecordedRequest, reply: Reply) -> None:
        await reply.head(200, [("content-type", "application/octet-stream")])
        while True:
            await reply.chunk(b"x" * 65536)

    upstream.handler = firehose
    call = fake_env.stub().Invoke(invoke_request(), timeout=30)
    await call.read()
    await asyncio.sleep(0.5)  # the gRPC flow-control window and the socket buffers fill up
    call.cancel()
    await asyncio.wait_for(upstream.disconnected.wait(), timeout=1)
