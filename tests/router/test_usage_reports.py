"""Usage reports of a real router: read from the upstream's answers as they pass, counted in the
metrics and sent to the vault's `RecordUsage` after the answer, never holding a byte back."""

from __future__ import annotations

import asyncio
import json

import grpc.aio
import pytest
from aicreds.router.v1 import router_pb2
from prometheus_client import CollectorRegistry

from services.router.metrics import provider_labels
from services.router.token_metrics import TokenMetrics
from services.router.usage import TokenUsage, UsageReport
from services.router.usage_reporter import UsageReporter
from tests.router.conftest import RouterEnv, RouterFactory
from tests.router.fake_vault import FakeVault
from tests.router.invoke_requests import SECRET, USER, invoke_request, setup_openai
from tests.support.fake_upstream import ANSWER_TEXT, FakeUpstream, VendorApi
from tests.support.metrics import scrape

BEARER = {"Authorization": ["Bearer {{credential:openai_api_key}}"]}


def use_vendor(upstream: FakeUpstream) -> VendorApi:
    vendor = VendorApi()
    vendor.bind(asyncio.get_running_loop())
    upstream.handler = vendor
    return vendor


def entries(vault: FakeVault) -> list[tuple[str, str, str, int, int, int]]:
    return [
        (e.user_id, e.provider, e.model, e.input_tokens, e.output_tokens, e.calls)
        for e in vault.usage
    ]


@pytest.fixture
async def env(fake_vault: FakeVault, router_factory: RouterFactory) -> RouterEnv:
    """A router exporting its metrics, in front of the fake vault."""
    return await router_factory(fake_vault.address, fake_vault.token, metrics_listen="127.0.0.1:0")


async def metric(env: RouterEnv, name: str, **labels: str) -> float:
    assert env.router.server.metrics is not None
    return (await scrape(env.router.server.metrics.port)).value(name, **labels)


async def test_streamed_answer_is_relayed_as_it_comes_then_its_usage_reported(
    fake_vault: FakeVault, env: RouterEnv, upstream: FakeUpstream
) -> None:
    vendor = use_vendor(upstream)
    setup_openai(fake_vault, upstream, BEARER)
    vendor.hold_streams()
    body = {"model": "gpt-4o", "stream": True, "stream_options": {"include_usage": True}}
    call = env.stub().Invoke(
        invoke_request(provider_name="", model="gpt-4o", body=json.dumps(body).encode()),
        timeout=10,
    )
    messages = call.__aiter__()
    assert (await messages.__anext__()).HasField("head")
    first = await asyncio.wait_for(messages.__anext__(), 5)
    # The first event came through while the upstream still holds the rest: nothing waits for
    # the usage at the end of the stream.
    assert b"Hello" in first.chunk
    assert not vendor.watch.last_chunk_sent.is_set()
    assert fake_vault.usage == []
    vendor.release_streams()
    rest = b"".join([m.chunk async for m in messages])
    assert rest.endswith(b"data: [DONE]\n\n") and b'"prompt_tokens": 5' in rest
    await env.router.usage.flush()
    assert entries(fake_vault) == [(USER, "openai", "gpt-4o", 5, 6, 1)]
    labels = {"provider": "openai", "model": "gpt-4o"}
    assert await metric(env, "aicreds_router_tokens_total", **labels, type="input") == 5
    assert await metric(env, "aicreds_router_tokens_total", **labels, type="output") == 6


async def test_buffered_answer_reported_and_a_provider_call_counts_model_unknown(
    fake_vault: FakeVault, env: RouterEnv, upstream: FakeUpstream
) -> None:
    use_vendor(upstream)
    setup_openai(fake_vault, upstream, BEARER)
    request = router_pb2.InvokeBufferedRequest(call=invoke_request())  # by provider name
    answer = await env.stub().InvokeBuffered(request, timeout=10)
    assert json.loads(answer.body)["choices"][0]["message"]["content"] == ANSWER_TEXT
    await env.router.usage.flush()
    assert entries(fake_vault) == [(USER, "openai", "unknown", 5, 6, 1)]


async def test_answers_without_usage_report_nothing(
    fake_vault: FakeVault, env: RouterEnv, upstream: FakeUpstream
) -> None:
    vendor = use_vendor(upstream)
    setup_openai(fake_vault, upstream, BEARER)
    vendor.usage = None
    stream = json.dumps({"model": "gpt-4o", "stream": True}).encode()
    for body in (b'{"model":"gpt-4o"}', stream):
        answer = await env.invoke(invoke_request(provider_name="", model="gpt-4o", body=body))
        assert answer.status == 200 and ANSWER_TEXT.split()[0].encode() in answer.body
    # An OpenAI stream reports usage only when the client asks (stream_options.include_usage).
    vendor.usage = (5, 6)
    await env.invoke(invoke_request(provider_name="", model="gpt-4o", body=stream))
    await env.router.usage.flush()
    assert fake_vault.usage == []
    assert await metric(env, "aicreds_router_token_usage_count", type="input") == 0


async def test_a_vault_refusing_reports_fails_no_call(
    fake_vault: FakeVault, env: RouterEnv, upstream: FakeUpstream
) -> None:
    use_vendor(upstream)
    setup_openai(fake_vault, upstream, BEARER)
    fake_vault.refuse_usage = True
    answer = await env.invoke(invoke_request(provider_name="", model="gpt-4o"))
    assert answer.status == 200 and json.loads(answer.body)["usage"]["prompt_tokens"] == 5
    await env.router.usage.flush()
    assert (
        await metric(env, "aicreds_router_usage_reports_dropped_total", reason="send_failed") == 1
    )
    # Counted in the metrics all the same.
    assert await metric(env, "aicreds_router_token_usage_count", type="output") == 1
    assert env.router.server.metrics is not None
    scraped = await scrape(env.router.server.metrics.port)
    secrets = [SECRET, "openai_api_key", USER, *env.tokens.values(), fake_vault.token]
    assert scraped.leaks(secrets) == []


async def test_a_full_queue_drops_and_counts() -> None:
    metrics = TokenMetrics(CollectorRegistry(), provider_labels())
    channel = grpc.aio.insecure_channel("127.0.0.1:9")
    try:
        reporter = UsageReporter(channel, metrics, max_queue=2)  # not started: nothing is sent
        report = UsageReport(USER, "openai", "gpt-4o", TokenUsage(1, 2))
        for _ in range(5):
            reporter.record(report)
        dropped = metrics.registry.get_sample_value(
            "aicreds_router_usage_reports_dropped_total", {"reason": "queue_full"}
        )
        assert dropped == 3
        assert (
            metrics.registry.get_sample_value("aicreds_router_token_usage_count", {"type": "input"})
            == 5
        )
    finally:
        await channel.close()


async def test_usage_reaches_the_vault_without_metrics(
    fake_vault: FakeVault, fake_env: RouterEnv, upstream: FakeUpstream
) -> None:
    use_vendor(upstream)
    setup_openai(fake_vault, upstream, BEARER)
    assert fake_env.router.server.metrics is None and fake_env.router.usage.metrics is None
    await fake_env.invoke(invoke_request(provider_name="", model="gpt-4o"))
    await fake_env.router.usage.flush()
    assert entries(fake_vault) == [(USER, "openai", "gpt-4o", 5, 6, 1)]


async def test_reports_arriving_over_time_gather_into_one_record_usage(
    fake_vault: FakeVault,
) -> None:
    channel = grpc.aio.insecure_channel(fake_vault.address)
    reporter = UsageReporter(channel, None, gather=60.0)
    reporter.start()
    try:
        for n in range(10):
            reporter.record(UsageReport(USER, "openai", "gpt-4o", TokenUsage(n + 1, 1)))
            await asyncio.sleep(0.01)  # calls end one by one, not all at once
        assert fake_vault.usage_requests == 0  # still gathering: a minute has not passed
        await reporter.flush()
        assert fake_vault.usage_requests == 1
        assert [e.input_tokens for e in fake_vault.usage] == list(range(1, 11))
    finally:
        await reporter.aclose()
        await channel.close()


async def test_a_gathering_batch_is_sent_without_a_flush(fake_vault: FakeVault) -> None:
    channel = grpc.aio.insecure_channel(fake_vault.address)
    reporter = UsageReporter(channel, None, gather=0.05)
    reporter.start()
    try:
        for _ in range(3):
            reporter.record(UsageReport(USER, "openai", "gpt-4o", TokenUsage(1, 2)))
        for _ in range(1000):
            if len(fake_vault.usage) == 3:
                break
            await asyncio.sleep(0.01)
        assert len(fake_vault.usage) == 3 and fake_vault.usage_requests == 1
    finally:
        await reporter.aclose()
        await channel.close()


async def test_closing_sends_a_gathering_batch_at_once(fake_vault: FakeVault) -> None:
    channel = grpc.aio.insecure_channel(fake_vault.address)
    reporter = UsageReporter(channel, None, gather=60.0)
    reporter.start()
    try:
        reporter.record(UsageReport(USER, "openai", "gpt-4o", TokenUsage(1, 2)))
        reporter.record(UsageReport(USER, "openai", "gpt-4o", TokenUsage(3, 4)))
        await asyncio.sleep(0.01)
        await reporter.aclose(grace=30.0)
        assert [(e.input_tokens, e.output_tokens) for e in fake_vault.usage] == [(1, 2), (3, 4)]
    finally:
        await channel.close()
