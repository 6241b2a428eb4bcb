"""End to end: the real vault, the router and a recording upstream, all on 127.0.0.1.

Providers and credentials are created through the vault's ProviderService and
CredentialService as the `gateway` caller (right `manage`); calls go through the router as an
`invoke` caller; the router resolves as `router` (right `resolve`).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio
import pytest
from aicreds.router.v1 import router_pb2
from aicreds.vault.v1 import (
    credentials_pb2,
    credentials_pb2_grpc,
    providers_pb2,
    providers_pb2_grpc,
)

from services.common.grpc_server import open_channel
from services.vault.config import VaultSettings
from services.vault.server import RunningVault, start_vault
from tests.router.conftest import RouterEnv, RouterFactory, provider, warnings_of
from tests.support.fake_upstream import FakeUpstream, RecordedRequest, Reply, sse_event
from tests.support.vault import VaultFiles, prepare_vault_files

USER = "user-e2e"
CREDENTIALS = {
    "openai_api_key": "sk-proj-Op3nAiSecretValue0001",
    "anthropic_api_key": "sk-ant-api03-AnthropicSecret0002",
    "custom_api_key": "custom-secret-value-0003",
    "custom_header_value": "custom-header-secret-0004",
    "part_a": "alpha-secret-0005",
    "part_b": "beta-secret-0006",
    "tricky": "{{credential:part_a}}",
}
CALLERS = {"router": ["resolve"], "gateway": ["manage"]}


@dataclass
class Stack:
    """The real vault (restartable on its port), a router in front of it, the upstream."""

    files: VaultFiles
    vault: RunningVault
    env: RouterEnv
    upstream: FakeUpstream
    manage: grpc.aio.Channel

    @property
    def vault_address(self) -> str:
        return f"127.0.0.1:{self.vault.port}"

    async def stop_vault(self) -> None:
        await self.vault.stop(0)

    async def start_vault(self) -> None:
        """Start the vault again on the same port, database and tokens."""
        self.vault = await start_vault(VaultSettings.from_env(self.files.env(self.vault_address)))

    async def add_provider(
        self,
        name: str,
        headers: Mapping[str, Sequence[str]],
        *,
        base_url: str | None = None,
        models: Sequence[str] = (),
        on_missing: str = "warn",
    ) -> None:
        message = provider(
            name,
            base_url or self.upstream.base_url + "/v1",
            headers,
            models=models,
            on_missing=on_missing,
        )
        await providers_pb2_grpc.ProviderServiceStub(self.manage).CreateProvider(
            providers_pb2.CreateProviderRequest(user_id=USER, provider=message), timeout=5
        )


def _request(provider_name: str | None, **fields: object) -> router_pb2.InvokeRequest:
    values: dict[str, object] = {
        "user_id": USER,
        "method": "POST",
        "path": "/chat/completions",
        "body": b'{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}',
    }
    if provider_name is not None:
        values["provider_name"] = provider_name
    values.update(fields)
    return router_pb2.InvokeRequest(**values)  # type: ignore[arg-type]


@pytest.fixture
async def stack(
    tmp_path: Path, router_factory: RouterFactory, upstream: FakeUpstream
) -> AsyncIterator[Stack]:
    files = prepare_vault_files(tmp_path / "vault", CALLERS)
    vault = await start_vault(VaultSettings.from_env(files.env("127.0.0.1:0")))
    manage = open_channel(f"127.0.0.1:{vault.port}", files.token("gateway"))
    env = await router_factory(f"127.0.0.1:{vault.port}", files.token("router"))
    result = Stack(files, vault, env, upstream, manage)
    try:
        await credentials_pb2_grpc.CredentialServiceStub(manage).ReplaceCredentials(
            credentials_pb2.ReplaceCredentialsRequest(user_id=USER, credentials=CREDENTIALS),
            timeout=5,
        )
        yield result
    finally:
        await manage.close()
        await result.vault.stop(0)


async def test_the_seed_examples(stack: Stack) -> None:
    await stack.add_provider("openai", {"Authorization": ["Bearer {{credential:openai_api_key}}"]})
    await stack.add_provider("anthropic", {"X-API-Key": ["{{credential:anthropic_api_key}}"]})
    await stack.add_provider(
        "custom",
        {
            "Authorization": ["Bearer {{credential:custom_api_key}}"],
            "Custom-Header": ["{{credential:custom_header_value}}"],
        },
    )
    for name in ("openai", "anthropic", "custom"):
        answer = await stack.env.invoke(_request(name))
        assert answer.status == 200 and answer.warnings == []
    openai, anthropic, custom = stack.upstream.requests
    assert openai.header_values("authorization") == [f"Bearer {CREDENTIALS['openai_api_key']}"]
    assert anthropic.header_values("x-api-key") == [CREDENTIALS["anthropic_api_key"]]
    assert anthropic.header("authorization") is None
    assert custom.header_values("authorization") == [f"Bearer {CREDENTIALS['custom_api_key']}"]
    assert custom.header_values("custom-header") == [CREDENTIALS["custom_header_value"]]


async def test_several_placeholders_multi_valued_headers_and_no_rescan(stack: Stack) -> None:
    await stack.add_provider(
        "multi",
        {
            "X-Pair": ["{{credential:part_a}}:{{credential:part_b}}", "only {{credential:part_b}}"],
            "X-Tricky": ["{{credential:tricky}}"],
        },
    )
    answer = await stack.env.invoke(_request("multi"))
    assert answer.status == 200 and answer.warnings == []
    (seen,) = stack.upstream.requests
    assert seen.header_values("x-pair") == [
        f"{CREDENTIALS['part_a']}:{CREDENTIALS['part_b']}",
        f"only {CREDENTIALS['part_b']}",
    ]
    # A value that looks like a placeholder is inserted literally, never expanded again.
    assert seen.header_values("x-tricky") == ["{{credential:part_a}}"]


async def test_missing_key_with_warn_proceeds_with_the_warning_in_trailers(stack: Stack) -> None:
    await stack.add_provider(
        "warn", {"Authorization": ["Bearer {{credential:absent_key}}"]}, on_missing="warn"
    )
    answer = await stack.env.invoke(_request("warn"))
    assert answer.status == 200
    assert answer.warnings == ["Credential not found: absent_key"]
    assert stack.upstream.requests[0].header("authorization") == "Bearer {{credential:absent_key}}"


async def test_missing_key_with_error_fails_and_the_upstream_is_never_called(
    stack: Stack,
) -> None:
    await stack.add_provider(
        "strict", {"Authorization": ["Bearer {{credential:absent_key}}"]}, on_missing="error"
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.env.invoke(_request("strict"))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "absent_key" in (caught.value.details() or "")
    trailers = tuple(caught.value.trailing_metadata() or ())
    assert ("x-error-reason", "credential_not_found") in trailers
    assert warnings_of(trailers) == ["Credential not found: absent_key"]
    assert stack.upstream.requests == []


async def test_client_auth_headers_never_reach_the_upstream(stack: Stack) -> None:
    await stack.add_provider("openai", {"Authorization": ["Bearer {{credential:openai_api_key}}"]})
    client = [
        router_pb2.Header(name="Authorization", value="Bearer sk-aic-the-clients-own-token"),
        router_pb2.Header(name="x-api-key", value="sk-aic-the-clients-own-token"),
        router_pb2.Header(name="content-type", value="application/json"),
    ]
    await stack.env.invoke(_request("openai", headers=client))
    (seen,) = stack.upstream.requests
    assert seen.header_values("authorization") == [f"Bearer {CREDENTIALS['openai_api_key']}"]
    assert seen.header("x-api-key") is None
    assert "sk-aic-the-clients-own-token" not in repr(seen)


async def test_model_selection_strips_the_prefix_in_the_body_only(stack: Stack) -> None:
    await stack.add_provider("openai", {}, models=["gpt-4o"])
    body = b'{"model": "openai/gpt-4o", "stream": true,  "n":1}'
    await stack.env.invoke(_request(None, model="openai/gpt-4o", body=body))
    assert stack.upstream.requests[0].body == b'{"model": "gpt-4o", "stream": true,  "n":1}'
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.env.invoke(_request(None, model="no-such-model"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_streaming_without_buffering(stack: Stack) -> None:
    await stack.add_provider("openai", {"Authorization": ["Bearer {{credential:openai_api_key}}"]})
    gate = asyncio.Event()

    async def sse(request: RecordedRequest, reply: Reply) -> None:
        await reply.head(200, [("content-type", "text/event-stream")])
        await reply.chunk(sse_event(0))
        await gate.wait()  # given only once the caller holds the first chunk
        for n in range(1, 50):
            await reply.chunk(sse_event(n))
        await reply.end()

    stack.upstream.handler = sse
    call = stack.env.stub().Invoke(_request("openai"), timeout=10)
    assert (await call.read()).head.status == 200
    first = await call.read()
    assert first.chunk == sse_event(0)
    gate.set()
    body = first.chunk
    # read() to the end: a call on grpc.aio's direct path (no client interceptor) refuses
    # iteration after read().
    while (message := await call.read()) is not grpc.aio.EOF:
        body += message.chunk
    assert body == b"".join(sse_event(n) for n in range(50))


async def test_cancelling_mid_stream_disconnects_the_upstream_within_a_second(
    stack: Stack,
) -> None:
    await stack.add_provider("openai", {})

    async def endless(request: RecordedRequest, reply: Reply) -> None:
        await reply.head(200, [("content-type", "text/event-stream")])
        await reply.chunk(sse_event(0))
        await asyncio.Event().wait()

    stack.upstream.handler = endless
    call = stack.env.stub().Invoke(_request("openai"), timeout=30)
    await call.read()
    await call.read()
    call.cancel()
    await asyncio.wait_for(stack.upstream.disconnected.wait(), timeout=1)


async def test_deadline_and_refused_connection(stack: Stack) -> None:
    await stack.add_provider("slow", {})

    async def slow(request: RecordedRequest, reply: Reply) -> None:
        await asyncio.sleep(30)

    stack.upstream.handler = slow
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.env.invoke(_request("slow"), timeout=0.7)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    await stack.add_provider("gone", {}, base_url=f"http://127.0.0.1:{closed_port}/v1")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.env.invoke(_request("gone"))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_vault_stopped_then_back_without_restarting_the_router(stack: Stack) -> None:
    await stack.add_provider("openai", {"Authorization": ["Bearer {{credential:openai_api_key}}"]})
    assert (await stack.env.invoke(_request("openai"))).status == 200
    await stack.stop_vault()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.env.invoke(_request("openai"))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "credential vault" in (caught.value.details() or "")
    await stack.start_vault()
    for _ in range(50):
        try:
            answer = await stack.env.invoke(_request("openai"))
            break
        except grpc.aio.AioRpcError as err:
            assert err.code() == grpc.StatusCode.UNAVAILABLE
            await asyncio.sleep(0.1)
    else:
        pytest.fail("the router did not reach the restarted vault")
    assert answer.status == 200
    assert stack.upstream.requests[-1].header("authorization") == (
        f"Bearer {CREDENTIALS['openai_api_key']}"
    )


@pytest.mark.parametrize(
    "base_url",
    ["http://169.254.169.254/v1", "http://10.0.0.1/v1", "http://[::1]/v1", "http://0.0.0.0/v1"],
)
async def test_egress_refused_before_anything_is_sent(stack: Stack, base_url: str) -> None:
    await stack.add_provider("bad", {}, base_url=base_url)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.env.invoke(_request("bad"))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert stack.upstream.requests == []
    assert stack.env.backend.connects == []  # refused before any connection was attempted


async def test_a_name_resolving_to_a_private_address_is_refused(stack: Stack) -> None:
    # The stub resolver answers 10.20.30.40 for this name; nothing is looked up for real.
    await stack.add_provider("internal", {}, base_url="https://api.internal.test/v1")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.env.invoke(_request("internal"))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # The category, never the address: callers must not learn the internal DNS.
    assert "10.20.30.40" not in (caught.value.details() or "")
    assert "private address" in (caught.value.details() or "")


async def test_callers_without_a_token_or_without_invoke(stack: Stack) -> None:
    await stack.add_provider("openai", {})
    for caller, code in (
        (None, grpc.StatusCode.UNAUTHENTICATED),
        ("stranger", grpc.StatusCode.UNAUTHENTICATED),
        ("manager", grpc.StatusCode.PERMISSION_DENIED),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in stack.env.stub(caller).Invoke(_request("openai"), timeout=5):
                pass
        assert caught.value.code() == code
    assert stack.upstream.requests == []


async def test_preview_through_the_real_vault(stack: Stack) -> None:
    await stack.add_provider(
        "custom",
        {
            "Authorization": ["Bearer {{credential:custom_api_key}}"],
            "X-Missing": ["{{credential:absent_key}}"],
        },
    )
    reply = await stack.env.stub().Preview(
        router_pb2.PreviewRequest(user_id=USER, provider_name="custom"), timeout=5
    )
    assert [(h.name, h.value) for h in reply.headers] == [
        ("Authorization", "Bearer cus...0003"),
        ("X-Missing", "{{credential:absent_key}}"),
    ]
    assert list(reply.warnings) == ["Credential not found: absent_key"]
    assert stack.upstream.requests == []


async def test_no_credential_value_in_any_log_record(
    stack: Stack, all_logs: Callable[[], str]
) -> None:
    await stack.add_provider(
        "everything",
        {
            "Authorization": ["Bearer {{credential:openai_api_key}}"],
            "X-API-Key": ["{{credential:anthropic_api_key}}"],
            "X-Other": ["{{credential:custom_api_key}} {{credential:absent_key}}"],
        },
    )
    await stack.add_provider(
        "strict",
        {"X-Key": ["{{credential:custom_header_value}} {{credential:nope}}"]},
        on_missing="error",
    )
    await stack.env.invoke(_request("everything"))
    await stack.env.stub().Preview(
        router_pb2.PreviewRequest(user_id=USER, provider_name="everything"), timeout=5
    )
    with pytest.raises(grpc.aio.AioRpcError):
        await stack.env.invoke(_request("strict"))
    logs = all_logs()
    assert "Credential not found: absent_key" in logs
    for value in CREDENTIALS.values():
        if not value.startswith("{{"):
            assert value not in logs
