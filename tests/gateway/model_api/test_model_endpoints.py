"""The model endpoints on their own: official SDKs -> gateway routes -> a scripted router.

The router and the vault's ProviderService are scripted gRPC servers (`stub_backends`), and
authentication is a stand-in with the gateway's contract (ApiError 401/403/429 with headers),
so every answer and failure can be chosen. `test_sdk_stack.py` runs the real services.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

import anthropic
import grpc
import grpc.aio
import httpx
import openai
import pytest
from aicreds.router.v1 import router_pb2_grpc
from aicreds.vault.v1 import providers_pb2, providers_pb2_grpc
from starlette.applications import Starlette
from starlette.requests import Request

from services.common.logging import JsonFormatter
from services.gateway.errors import ApiError, from_rpc_error
from services.gateway.middleware import GatewayApplication
from services.gateway.model_api.endpoints import model_endpoints
from services.gateway.model_api.model_call import LlmBackend, LlmPrincipal
from services.gateway.observability import Metrics
from tests.gateway.support.background import BackgroundLoop
from tests.gateway.support.fake_upstream import (
    ANSWER_TEXT,
    STREAM_PIECES,
    anthropic_events,
    anthropic_message,
    chat_completion,
    openai_events,
)
from tests.gateway.support.stub_backends import (
    RouterScript,
    StubProviders,
    StubRouter,
    provider,
    start_stub_server,
)
from tests.support.asgi import serve_asgi

GOOD = "sk-aic-good-token-for-tests"
NO_SCOPE = "sk-aic-token-without-llm-scope"
LIMITED = "sk-aic-token-over-its-rate-limit"
EXPLODES = "sk-aic-token-whose-check-raises"
BUG_TEXT = "text of an unexpected exception, which could hold anything"
USER = "user-1"
JSON = [("content-type", "application/json")]
SSE = [("content-type", "text/event-stream; charset=utf-8")]


async def stand_in_authenticate(request: Request) -> LlmPrincipal:
    """The gateway's contract: Bearer or x-api-key, scope llm:invoke, ApiError otherwise."""
    header = request.headers.get("authorization", "")
    token = header[7:] if header.lower().startswith("bearer ") else request.headers.get("x-api-key")
    if token == EXPLODES:
        raise RuntimeError(BUG_TEXT)
    if token == LIMITED:
        raise ApiError(429, "rate_limited", "too many requests", headers={"Retry-After": "30"})
    if token not in (GOOD, NO_SCOPE):
        raise ApiError(401, "unauthorized", "unknown token")
    if token == NO_SCOPE:
        raise ApiError(403, "forbidden", "the token lacks the scope llm:invoke")
    return LlmPrincipal(USER, {"X-RateLimit-Limit": "40"})


def stub_app(channel: grpc.aio.Channel) -> Starlette:
    """The model endpoints alone, on gRPC stubs reached through `channel`."""
    router = router_pb2_grpc.RouterServiceStub(channel)
    providers = providers_pb2_grpc.ProviderServiceStub(channel)

    async def list_providers(user_id: str) -> list[providers_pb2.Provider]:
        try:
            reply = await providers.ListProviders(
                providers_pb2.ListProvidersRequest(user_id=user_id), timeout=5
            )
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err, "vault") from None
        return list(reply.providers)

    backend = LlmBackend(
        authenticate=stand_in_authenticate,
        router_stub=lambda: router,
        list_providers=list_providers,
        router_timeout=5,
        max_body=1024 * 1024,
    )
    # Under the gateway's one ASGI layer, which renders what a route raises in its shape.
    routes = [endpoint.route() for endpoint in model_endpoints(backend)]
    return GatewayApplication(metrics=Metrics(), routes=routes)


@dataclass
class Gateway:
    url: str
    router: StubRouter
    providers: StubProviders
    loop: BackgroundLoop

    @property
    def openai_url(self) -> str:
        return f"{self.url}/v1"


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    loop = BackgroundLoop()
    router, providers = StubRouter(), StubProviders()
    try:
        stub = loop.run(start_stub_server(router, providers))

        async def build() -> Starlette:
            # The gateway's channel options: answers up to 64 MiB, as from `open_channel`.
            options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
            return stub_app(grpc.aio.insecure_channel(stub.address, options=options))

        url = loop.enter(serve_asgi(loop.run(build())))
        yield Gateway(url, router, providers, loop)
        loop.run(stub.stop())
    finally:
        loop.close()


@pytest.fixture
def gw(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> Gateway:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    gateway.router.release(gateway.loop.loop)  # free any stream a failed test left held
    gateway.router.reset()
    gateway.providers.providers = {}
    gateway.providers.failure = None
    return gateway


def openai_client(gw: Gateway, token: str = GOOD) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.openai_url, api_key=token, max_retries=0)


def anthropic_client(gw: Gateway, token: str = GOOD) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=token, max_retries=0)


# -- what reaches the router ----------------------------------------------------------------


def test_body_bytes_model_path_and_only_allowlisted_headers_reach_the_router(gw: Gateway) -> None:
    gw.router.script = RouterScript(headers=JSON, chunks=[b"{}"])
    body = b'{"stream": false,  "messages": [],\n "model": "openai/gpt-4", "x": 1.50}'
    response = httpx.post(
        f"{gw.openai_url}/chat/completions?api-version=2",
        content=body,
        headers={
            "Authorization": f"Bearer {GOOD}",
            "x-api-key": GOOD,
            "Cookie": "aicreds_session=abc",
            "Content-Type": "application/json",
            "OpenAI-Beta": "assistants=v2",
            "X-Request-Id": "req-123",
            "X-Stainless-Lang": "python",
        },
    )
    assert response.status_code == 200
    [call] = gw.router.requests
    assert (call.user_id, call.model, call.method) == (USER, "openai/gpt-4", "POST")
    assert (call.path, call.query) == ("/chat/completions", "api-version=2")
    assert call.body == body  # byte for byte: never re-encoded
    forwarded = {h.name: h.value for h in call.headers}
    assert forwarded.pop("user-agent").startswith("python-httpx/")
    assert forwarded == {
        "content-type": "application/json",
        "openai-beta": "assistants=v2",
        "x-request-id": "req-123",
        "accept": "*/*",
    }
    assert GOOD not in repr(call)


def test_openai_sdk_chat_completion_and_warning_headers(gw: Gateway) -> None:
    gw.router.script = RouterScript(
        headers=[*JSON, ("x-request-id", "up-1"), ("set-cookie", "__cf=1"), ("connection", "x")],
        chunks=[json.dumps(chat_completion("gpt-4")).encode()],
        trailing_warnings=["Credential not found: org_id"],
    )
    with openai_client(gw) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4", messages=[{"role": "user", "content": "Hello!"}]
        )
    assert raw.parse().choices[0].message.content == ANSWER_TEXT
    assert raw.headers.get_list("x-credential-warning") == ["Credential not found: org_id"]
    assert raw.headers["x-upstream-request-id"] == "up-1"
    assert raw.headers["x-ratelimit-limit"] == "40"
    assert "set-cookie" not in raw.headers


async def test_async_openai_sdk_streams_chunk_by_chunk(gw: Gateway) -> None:
    gw.router.script = RouterScript(
        headers=SSE,
        chunks=openai_events("gpt-4"),
        initial_warnings=["malformed placeholder"],
        hold_after_first_chunk=True,
    )
    async with openai.AsyncOpenAI(base_url=gw.openai_url, api_key=GOOD, max_retries=0) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="gpt-4", messages=[{"role": "user", "content": "Hi"}], stream=True
        )
        assert raw.headers.get_list("x-credential-warning") == ["malformed placeholder"]
        assert "content-length" not in raw.headers
        stream = raw.parse()
        iterator = stream.__aiter__()
        first = await iterator.__anext__()
        # The router is still holding every later chunk: nothing was buffered on the way.
        assert first.choices[0].delta.content == STREAM_PIECES[0]
        assert not gw.router.last_chunk_sent.is_set()
        gw.router.release(gw.loop.loop)
        rest = [c.choices[0].delta.content async for c in iterator if c.choices]
    assert "".join(p for p in rest if p) == ANSWER_TEXT[len(STREAM_PIECES[0]) :]


def test_anthropic_sdk_message_and_stream(gw: Gateway) -> None:
    with anthropic_client(gw) as client:
        gw.router.script = RouterScript(
            headers=JSON, chunks=[json.dumps(anthropic_message("claude-3.5-sonnet")).encode()]
        )
        message = client.messages.create(
            model="claude-3.5-sonnet", max_tokens=100, messages=[{"role": "user", "content": "Hi"}]
        )
        assert message.content[0].type == "text" and message.content[0].text == ANSWER_TEXT
        gw.router.script = RouterScript(headers=SSE, chunks=anthropic_events("claude-3.5-sonnet"))
        with client.messages.stream(
            model="claude-3.5-sonnet", max_tokens=100, messages=[{"role": "user", "content": "Hi"}]
        ) as stream:
            assert "".join(stream.text_stream) == ANSWER_TEXT
    assert [r.path for r in gw.router.requests] == ["/v1/messages", "/v1/messages"]


# -- errors in each vendor's shape ------------------------------------------------------------


def test_authentication_scope_and_rate_limit_errors_raise_the_documented_exceptions(
    gw: Gateway,
) -> None:
    cases: list[tuple[str, type[Exception], type[Exception], str]] = [
        ("sk-aic-wrong", openai.AuthenticationError, anthropic.AuthenticationError, "unknown"),
        (NO_SCOPE, openai.PermissionDeniedError, anthropic.PermissionDeniedError, "llm:invoke"),
        (LIMITED, openai.RateLimitError, anthropic.RateLimitError, "too many"),
    ]
    for token, openai_error, anthropic_error, words in cases:
        with openai_client(gw, token) as client, pytest.raises(openai_error, match=words) as oe:
            client.chat.completions.create(model="gpt-4", messages=[])
        with anthropic_client(gw, token) as ac, pytest.raises(anthropic_error, match=words) as ae:
            ac.messages.create(model="claude", max_tokens=1, messages=[])
        assert ae.value.type in ("authentication_error", "permission_error", "rate_limit_error")
        assert oe.value.code in ("unauthorized", "forbidden", "rate_limited")
    assert oe.value.response.headers["retry-after"] == "30"
    assert gw.router.requests == []


def test_an_unexpected_error_is_a_fixed_500_in_the_vendor_shape(
    gw: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    with openai_client(gw, EXPLODES) as client:
        with pytest.raises(openai.InternalServerError, match="internal error") as err:
            client.chat.completions.create(model="gpt-4", messages=[])
        with pytest.raises(openai.InternalServerError, match="internal error"):
            client.models.list()
    assert err.value.code == "internal"
    with anthropic_client(gw, EXPLODES) as ac:
        with pytest.raises(anthropic.InternalServerError, match="internal error"):
            ac.messages.create(model="claude", max_tokens=1, messages=[])
    bearer = {"Authorization": f"Bearer {EXPLODES}"}
    openai_answer = httpx.post(f"{gw.url}/v1/chat/completions", headers=bearer, json={})
    assert openai_answer.status_code == 500
    assert openai_answer.json() == {
        "error": {
            "message": "internal error",
            "type": "server_error",
            "param": None,
            "code": "internal",
        }
    }
    anthropic_answer = httpx.post(f"{gw.url}/v1/messages", headers=bearer, json={})
    assert anthropic_answer.status_code == 500
    assert anthropic_answer.json() == {
        "type": "error",
        "error": {"type": "api_error", "message": "internal error"},
    }
    listed = httpx.get(f"{gw.url}/v1/models", headers={**bearer, "anthropic-version": "2023-06-01"})
    assert listed.status_code == 500 and listed.json()["type"] == "error"
    assert BUG_TEXT not in openai_answer.text + anthropic_answer.text + listed.text
    # Logged once per request, by the middleware; as the service writes it (JSON lines), the
    # exception is named by its type only.
    logged = [getattr(r, "fields", {}) for r in caplog.records if r.name == "aicreds.gateway"]
    assert {"error": "RuntimeError", "route": "/v1/chat/completions"} in logged
    assert {"error": "RuntimeError", "route": "/v1/messages"} in logged
    written = "\n".join(JsonFormatter("gateway").format(r) for r in caplog.records)
    assert "RuntimeError" in written and BUG_TEXT not in written


ROUTER_FAILURES = [
    # router status, reason, HTTP status, openai exception, anthropic exception
    (
        grpc.StatusCode.NOT_FOUND,
        "model_not_found",
        404,
        openai.NotFoundError,
        anthropic.NotFoundError,
    ),
    (
        grpc.StatusCode.FAILED_PRECONDITION,
        "credential_not_found",
        424,
        openai.APIStatusError,
        anthropic.APIStatusError,
    ),
    (
        grpc.StatusCode.UNAVAILABLE,
        "vault_unavailable",
        503,
        openai.InternalServerError,
        anthropic.ServiceUnavailableError,
    ),
    (
        grpc.StatusCode.UNAVAILABLE,
        "upstream_unavailable",
        502,
        openai.InternalServerError,
        anthropic.InternalServerError,
    ),
    (
        grpc.StatusCode.DEADLINE_EXCEEDED,
        "upstream_timeout",
        504,
        openai.InternalServerError,
        anthropic.GatewayTimeoutError,
    ),
]


@pytest.mark.parametrize(
    ("code", "reason", "status", "openai_error", "anthropic_error"), ROUTER_FAILURES
)
def test_router_failures_become_vendor_errors(
    gw: Gateway,
    code: grpc.StatusCode,
    reason: str,
    status: int,
    openai_error: type[openai.APIStatusError],
    anthropic_error: type[anthropic.APIStatusError],
) -> None:
    details = f"what failed: {reason}"
    gw.router.script = RouterScript(fail_before_head=(code, details, reason))
    with openai_client(gw) as client, pytest.raises(openai_error, match=details) as oe:
        client.chat.completions.create(model="gpt-9", messages=[])
    assert (oe.value.status_code, oe.value.code) == (status, reason)
    with anthropic_client(gw) as ac, pytest.raises(anthropic_error, match=details) as ae:
        ac.messages.create(model="claude-9", max_tokens=1, messages=[])
    assert ae.value.status_code == status
    assert ae.value.response.json()["type"] == "error"


def test_an_unreachable_router_is_503_naming_the_router(gw: Gateway) -> None:
    async def build() -> Starlette:
        return stub_app(grpc.aio.insecure_channel("127.0.0.1:1"))

    async def call() -> httpx.Response:
        async with serve_asgi(await build()) as url, httpx.AsyncClient() as client:
            return await client.post(
                f"{url}/v1/chat/completions",
                json={"model": "gpt-4", "messages": []},
                headers={"Authorization": f"Bearer {GOOD}"},
            )

    response = gw.loop.run(call())
    assert response.status_code == 503
    assert response.json()["error"] == {
        "message": "router is unavailable",
        "type": "server_error",
        "param": None,
        "code": "unavailable",
    }


def test_failure_mid_stream_ends_the_event_stream_with_an_error_event(gw: Gateway) -> None:
    failure = (grpc.StatusCode.UNAVAILABLE, "upstream connection lost", "upstream_unavailable")
    gw.router.script = RouterScript(
        headers=SSE, chunks=openai_events("gpt-4")[:2], fail_after_chunks=failure
    )
    with openai_client(gw) as client:
        stream = client.chat.completions.create(model="gpt-4", messages=[], stream=True)
        with pytest.raises(openai.APIError, match="upstream connection lost"):
            list(stream)
    gw.router.script = RouterScript(
        headers=SSE, chunks=anthropic_events("claude")[:2], fail_after_chunks=failure
    )
    with anthropic_client(gw) as client:
        stream2 = client.messages.create(model="claude", max_tokens=1, messages=[], stream=True)
        with pytest.raises(anthropic.APIStatusError, match="upstream connection lost"):
            list(stream2)


def test_failure_mid_body_of_a_collected_answer_is_still_a_clean_error(gw: Gateway) -> None:
    failure = (grpc.StatusCode.UNAVAILABLE, "upstream connection lost", "upstream_unavailable")
    gw.router.script = RouterScript(headers=JSON, chunks=[b'{"id": '], fail_after_chunks=failure)
    with openai_client(gw) as client:
        with pytest.raises(openai.InternalServerError, match="upstream connection lost") as err:
            client.chat.completions.create(model="gpt-4", messages=[])
    assert err.value.status_code == 502


def test_failure_mid_body_of_a_relayed_answer_cuts_the_connection(gw: Gateway) -> None:
    failure = (grpc.StatusCode.UNAVAILABLE, "upstream connection lost", "upstream_unavailable")
    gw.router.script = RouterScript(headers=JSON, chunks=[b'{"id": '], fail_after_chunks=failure)
    body = {"model": "gpt-4", "stream": True}
    with httpx.Client() as client:
        with client.stream(
            "POST",
            f"{gw.openai_url}/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {GOOD}"},
        ) as response:
            assert response.status_code == 200
            # Never a truncated body that looks whole: the chunked message is left unfinished.
            with pytest.raises(httpx.RemoteProtocolError):
                response.read()


def test_bad_bodies_are_400_in_the_vendor_shape(gw: Gateway) -> None:
    headers = {"Authorization": f"Bearer {GOOD}"}
    for body in (b"{not json", b"[1]", b'{"messages": []}', b"[" * 100_000, b'{"model": 4}'):
        response = httpx.post(f"{gw.openai_url}/chat/completions", content=body, headers=headers)
        assert response.status_code == 400
        assert response.json()["error"]["type"] == "invalid_request_error"
    response = httpx.post(f"{gw.url}/v1/messages", content=b"{}", headers=headers)
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert response.json()["type"] == "error"
    assert gw.router.requests == []


# -- disconnects ---------------------------------------------------------------------------


def test_client_disconnect_mid_stream_cancels_the_router_call(gw: Gateway) -> None:
    gw.router.script = RouterScript(
        headers=SSE, chunks=openai_events("gpt-4"), hold_after_first_chunk=True
    )
    client = openai_client(gw)
    stream = client.chat.completions.create(model="gpt-4", messages=[], stream=True)
    next(iter(stream))
    closed_at = time.monotonic()
    stream.close()
    client.close()
    assert gw.router.cancelled.wait(1.0), "the router call was not cancelled"
    assert gw.router.cancelled_at is not None and gw.router.cancelled_at - closed_at < 1.0


# -- models --------------------------------------------------------------------------------


def test_models_of_all_providers_in_both_shapes(gw: Gateway) -> None:
    gw.providers.providers = {
        USER: [
            provider("openai", ["gpt-4", "text-embedding-3-small"]),
            provider("anthropic", ["claude-3.5-sonnet"], providers_pb2.PROVIDER_KIND_ANTHROPIC),
            provider("azure", ["gpt-4"]),
        ],
        "someone-else": [provider("theirs", ["secret-model"])],
    }
    with openai_client(gw) as client:
        models = client.models.list()
        assert [(m.id, m.owned_by, m.object) for m in models] == [
            ("claude-3.5-sonnet", "anthropic", "model"),
            ("gpt-4", "azure", "model"),
            ("text-embedding-3-small", "openai", "model"),
        ]
        assert client.models.retrieve("openai/gpt-4").owned_by == "openai"
        with pytest.raises(openai.NotFoundError, match="secret-model"):
            client.models.retrieve("secret-model")
    with anthropic_client(gw) as ac:
        page = ac.models.list()
        assert [m.id for m in page.data] == ["claude-3.5-sonnet", "gpt-4", "text-embedding-3-small"]
        assert ac.models.retrieve("claude-3.5-sonnet").id == "claude-3.5-sonnet"


def test_models_when_the_vault_is_down(gw: Gateway) -> None:
    gw.providers.failure = (grpc.StatusCode.UNAVAILABLE, "connection refused", None)
    with openai_client(gw) as client, pytest.raises(openai.InternalServerError, match="vault"):
        client.models.list()
    with (
        anthropic_client(gw) as ac,
        pytest.raises(anthropic.ServiceUnavailableError, match="vault"),
    ):
        ac.models.list()


# -- non-streamed calls: one InvokeBuffered ---------------------------------------------------


def _post_chat(gw: Gateway, body: dict[str, object]) -> httpx.Response:
    return httpx.post(
        f"{gw.openai_url}/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {GOOD}"},
        timeout=10,
    )


def test_only_streamed_calls_use_the_streaming_invoke(gw: Gateway) -> None:
    gw.router.script = RouterScript(headers=JSON, chunks=[b"{}"])
    for stream in (None, False, "true", True):
        body: dict[str, object] = {"model": "gpt-4"}
        if stream is not None:
            body["stream"] = stream
        assert _post_chat(gw, body).status_code == 200
    assert gw.router.rpcs == ["InvokeBuffered"] * 3 + ["Invoke"]
    assert gw.router.max_body_bytes == [0, 0, 0]  # the router's own limit


def test_a_buffered_answer_is_framed_as_a_collected_one(gw: Gateway) -> None:
    gw.router.script = RouterScript(
        status=201,
        headers=[*JSON, ("x-request-id", "up-1"), ("content-length", "99"), ("date", "x")],
        chunks=[b'{"a":', b" 1}"],
        initial_warnings=["malformed placeholder"],
        trailing_warnings=["Credential not found: org", "malformed placeholder"],
    )
    response = _post_chat(gw, {"model": "gpt-4"})
    assert response.status_code == 201
    assert response.content == b'{"a": 1}'
    # Besides the gateway's own: its `x-request-id` (the middleware's), date and server.
    ours = ("date", "server", "x-request-id")
    assert [(k, v) for k, v in response.headers.multi_items() if k not in ours] == [
        ("content-type", "application/json"),
        ("x-upstream-request-id", "up-1"),
        ("x-ratelimit-limit", "40"),
        ("x-credential-warning", "malformed placeholder"),
        ("x-credential-warning", "Credential not found: org"),
        ("content-length", "8"),
    ]


def test_an_event_stream_nobody_asked_for_is_sent_as_an_event_stream(gw: Gateway) -> None:
    gw.router.script = RouterScript(headers=SSE, chunks=openai_events("gpt-4"))
    response = _post_chat(gw, {"model": "gpt-4"})
    assert response.content == b"".join(openai_events("gpt-4"))
    assert "content-length" not in response.headers
    assert response.headers["transfer-encoding"] == "chunked"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"


def test_an_answer_over_8_mib_is_sent_without_a_length(gw: Gateway) -> None:
    eight_mib = 8 * 1024 * 1024
    for size, chunked in ((eight_mib, False), (eight_mib + 1, True)):
        gw.router.script = RouterScript(
            headers=JSON, chunks=[b"x" * size], trailing_warnings=["Credential not found: k"]
        )
        response = _post_chat(gw, {"model": "gpt-4"})
        assert len(response.content) == size
        assert ("content-length" not in response.headers) is chunked
        assert response.headers.get("transfer-encoding") == ("chunked" if chunked else None)
        assert response.headers["x-credential-warning"] == "Credential not found: k"


def test_client_disconnect_before_a_buffered_answer_cancels_the_router_call(gw: Gateway) -> None:
    gw.router.script = RouterScript(headers=JSON, chunks=[b"{}"], hold_after_first_chunk=True)

    async def leave_early() -> float:
        async with httpx.AsyncClient() as client:
            request = client.post(
                f"{gw.openai_url}/chat/completions",
                json={"model": "gpt-4"},
                headers={"Authorization": f"Bearer {GOOD}"},
            )
            task = gw.loop.loop.create_task(request)
            while not gw.router.requests:
                await asyncio.sleep(0.01)
            task.cancel()
            closed_at = time.monotonic()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return closed_at

    closed_at = gw.loop.run(leave_early())
    assert gw.router.cancelled.wait(1.0), "the router call was not cancelled"
    assert gw.router.cancelled_at is not None and gw.router.cancelled_at - closed_at < 1.0
