"""The router's Prometheus metrics (issue 18 item 1): `/metrics` on `ROUTER_METRICS_LISTEN`,
read with Prometheus' own parser, moving by exactly the calls made, and no label value holding
a credential, a token, a key name, a user id or a URL."""

from __future__ import annotations

import grpc
import grpc.aio
import pytest
from aicreds.router.v1 import router_pb2

from services.router.config import RouterSettings
from services.router.metrics import MAX_PROVIDER_LABELS, OTHER_PROVIDER, provider_labels
from tests.router.conftest import RouterEnv, RouterFactory, provider
from tests.router.fake_vault import FakeVault
from tests.support.fake_upstream import FakeUpstream, RecordedRequest, Reply
from tests.support.metrics import Scrape, delta, scrape

USER = "user-metrics-4711"
KEY = "metrics_test_api_key"
VALUE = "sk-metrics-VALUE-0123456789abcdef"
INVOKE = "/aicreds.router.v1.RouterService/Invoke"
PREFIX = "aicreds_router_"


async def _answer(request: RecordedRequest, reply: Reply) -> None:
    """200 for chat completions, 503 for anything else."""
    status = 200 if request.path.endswith("/chat/completions") else 503
    await reply.json(status, {"id": "chatcmpl-metrics", "object": "chat.completion"})


def _setup(vault: FakeVault, upstream: FakeUpstream) -> None:
    auth = {"Authorization": [f"Bearer {{{{credential:{KEY}}}}}"]}
    vault.providers[USER] = [
        provider("metrics-llm", upstream.base_url + "/v1", auth),
        # An internal address: the egress policy refuses it before anything is sent.
        provider("internal-llm", "http://10.20.30.40:8080/v1", auth),
    ]
    vault.credentials[USER] = {KEY: VALUE}
    upstream.handler = _answer


def _request(provider_name: str, path: str = "/chat/completions") -> router_pb2.InvokeRequest:
    return router_pb2.InvokeRequest(
        user_id=USER, provider_name=provider_name, method="POST", path=path, body=b"{}"
    )


async def _failure(
    env: RouterEnv, request: router_pb2.InvokeRequest, caller: str = "gateway"
) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await env.invoke(request, caller=caller)
    code: grpc.StatusCode = failure.value.code()
    return str(code.name)


@pytest.fixture
async def env(fake_vault: FakeVault, router_factory: RouterFactory) -> RouterEnv:
    return await router_factory(fake_vault.address, fake_vault.token, metrics_listen="127.0.0.1:0")


def _port(env: RouterEnv) -> int:
    assert env.router.server.metrics is not None
    return env.router.server.metrics.port


async def test_metrics_count_rpcs_and_upstream_requests_exactly(
    env: RouterEnv, fake_vault: FakeVault, upstream: FakeUpstream
) -> None:
    _setup(fake_vault, upstream)
    before = await scrape(_port(env))
    for _ in range(3):
        assert (await env.invoke(_request("metrics-llm"))).status == 200
    assert (await env.invoke(_request("metrics-llm", "/broken"))).status == 503
    assert await _failure(env, _request("no-such-provider")) == "NOT_FOUND"
    assert await _failure(env, _request("internal-llm")) == "PERMISSION_DENIED"
    assert await _failure(env, _request("metrics-llm"), caller="nobody") == "UNAUTHENTICATED"
    after = await scrape(_port(env))

    requests = PREFIX + "grpc_requests_total"
    # An upstream's 503 is an answer relayed: the RPC itself is OK.
    assert delta(before, after, requests, method=INVOKE, code="OK") == 4
    assert delta(before, after, requests, method=INVOKE, code="NOT_FOUND") == 1
    assert delta(before, after, requests, method=INVOKE, code="PERMISSION_DENIED") == 1
    assert delta(before, after, requests, method=INVOKE, code="UNAUTHENTICATED") == 1
    assert delta(before, after, requests) == 7
    latency = PREFIX + "grpc_request_duration_seconds_count"
    assert delta(before, after, latency, method=INVOKE) == 7
    assert after.value(PREFIX + "grpc_requests_in_flight", method=INVOKE) == 0

    sent = PREFIX + "upstream_requests_total"
    assert delta(before, after, sent, provider="metrics-llm", status_class="2xx") == 3
    assert delta(before, after, sent, provider="metrics-llm", status_class="5xx") == 1
    assert delta(before, after, sent, provider="internal-llm", status_class="error") == 1
    assert delta(before, after, sent) == 5  # not the provider the vault lacks
    assert delta(before, after, PREFIX + "egress_refusals_total") == 1
    first_byte = PREFIX + "upstream_time_to_first_byte_seconds_count"
    assert delta(before, after, first_byte, provider="metrics-llm") == 4
    assert delta(before, after, first_byte, provider="internal-llm") == 0  # no answer came
    duration = PREFIX + "upstream_request_duration_seconds_count"
    assert delta(before, after, duration, provider="metrics-llm") == 4
    assert delta(before, after, duration, provider="internal-llm") == 1
    # Every answer was read to its end: the connection is back in the pool, idle.
    assert after.value(PREFIX + "upstream_connections_in_use") == 0
    assert after.value(PREFIX + "upstream_connections_idle") >= 1

    secrets = [VALUE, KEY, USER, fake_vault.token, *env.tokens.values()]
    secrets += ["10.20.30.40", "127.0.0.1", str(upstream.port), "/v1", "chat/completions"]
    assert after.leaks(secrets) == []


async def test_metrics_are_served_on_metrics_and_hold_every_family(env: RouterEnv) -> None:
    scraped: Scrape = await scrape(_port(env), "/metrics")
    for family in (
        "grpc_requests",
        "grpc_request_duration_seconds",
        "grpc_requests_in_flight",
        "upstream_requests",
        "upstream_request_duration_seconds",
        "upstream_time_to_first_byte_seconds",
        "upstream_connections_in_use",
        "upstream_connections_idle",
        "egress_refusals",
    ):
        assert PREFIX + family in scraped.families


async def test_no_metrics_endpoint_unless_configured(
    fake_vault: FakeVault, router_factory: RouterFactory
) -> None:
    assert RouterSettings.from_env({}).metrics_listen is None
    assert RouterSettings.from_env({"ROUTER_METRICS_LISTEN": ""}).metrics_listen is None
    env = await router_factory(fake_vault.address, fake_vault.token)
    assert env.router.server.metrics is None


@pytest.mark.parametrize("value", ["9464", "localhost", "host:port", ":9464", "h:99999"])
def test_a_bad_metrics_address_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="ROUTER_METRICS_LISTEN"):
        RouterSettings.from_env({"ROUTER_METRICS_LISTEN": value})


def test_provider_labels_are_bounded_and_never_key_like() -> None:
    labels = provider_labels()
    assert labels("openai") == "openai"
    # What a pasted key or a random id looks like, and names too long or of other characters.
    for name in ("sk-proj-a1b2c3d4e5f6g7h8i9j0", "x" * 33, "OpenAI", "a b", "user@example"):
        assert labels(name) == OTHER_PROVIDER
    for n in range(MAX_PROVIDER_LABELS - 1):
        assert labels(f"p{n}") == f"p{n}"
    assert labels("one-too-many") == OTHER_PROVIDER
    assert labels("openai") == "openai"  # the names already seen keep their label
