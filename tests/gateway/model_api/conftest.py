"""The model endpoints on their own: official SDKs -> gateway routes -> a scripted router.

The router and the vault's ProviderService are scripted gRPC servers (`stub_backends`), and
authentication is a stand-in with the gateway's contract (ApiError 401/403/429 with headers),
so every answer and failure can be chosen. The fixture `gw` serves `model_endpoints` under the
gateway's middleware; `test_sdk_stack.py` runs the real services instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import anthropic
import grpc
import grpc.aio
import openai
import pytest
from aicreds.router.v1 import router_pb2_grpc
from aicreds.vault.v1 import providers_pb2, providers_pb2_grpc
from starlette.applications import Starlette
from starlette.requests import Request

from services.gateway.errors import ApiError, from_rpc_error
from services.gateway.middleware import GatewayApplication
from services.gateway.model_api.endpoints import model_endpoints
from services.gateway.model_api.model_call import LlmBackend, LlmPrincipal
from services.gateway.observability import Metrics
from tests.gateway.support.stub_backends import StubProviders, StubRouter, start_stub_server
from tests.support.asgi import serve_asgi
from tests.support.background import BackgroundLoop

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
        # Unary: the stub router has no InvokeBufferedStream (tests/router covers the streams).
        invoke_stream=lambda request, timeout: router.Invoke(request, timeout=timeout),
        invoke_buffered=lambda request, timeout: router.InvokeBuffered(request, timeout=timeout),
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
