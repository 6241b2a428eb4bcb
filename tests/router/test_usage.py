"""Token usage read from answers as they pass (`services.router.usage`), and its metrics."""

from __future__ import annotations

import json

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from services.common.usage_rules import MAX_TOKENS
from services.router.metrics import provider_labels
from services.router.token_metrics import MAX_MODELS, TokenMetrics
from services.router.usage import (
    JSON_TAIL_BYTES,
    MAX_EVENT_BYTES,
    TokenUsage,
    UsageReport,
    UsageTap,
)
from tests.support.fake_upstream import (
    anthropic_events,
    anthropic_message,
    chat_completion,
    embeddings,
    openai_events,
)

SSE = [("content-type", "text/event-stream; charset=utf-8")]
JSON = [("Content-Type", "application/json")]


def read(
    chunks: list[bytes], headers: list[tuple[str, str]], status: int = 200
) -> TokenUsage | None:
    tap = UsageTap.for_answer(status, headers)
    assert tap is not None
    for chunk in chunks:
        tap.feed(chunk)
    return tap.usage()


def split_every(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_openai_answer() -> None:
    body = json.dumps(chat_completion("gpt-4", (11, 7))).encode()
    assert read([body], JSON) == TokenUsage(11, 7)
    assert read(split_every(body, 3), JSON) == TokenUsage(11, 7)


def test_openai_embeddings_count_input_only() -> None:
    body = json.dumps(embeddings("text-embedding-3-small", base64_encoded=False)).encode()
    assert read([body], JSON) == TokenUsage(2, 0)


@pytest.mark.parametrize("size", [1, 7, 64, 100_000])
def test_openai_stream_with_include_usage(size: int) -> None:
    # Every chunk carries "usage": null; the last one before [DONE] the counts.
    stream = b"".join(openai_events("gpt-4", (13, 21)))
    assert stream.count(b'"usage": null') >= 6
    assert read(split_every(stream, size), SSE) == TokenUsage(13, 21)


def test_openai_stream_with_crlf_lines() -> None:
    stream = b"".join(openai_events("gpt-4", (3, 4))).replace(b"\n", b"\r\n")
    assert read(split_every(stream, 5), SSE) == TokenUsage(3, 4)


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
def test_a_stream_cut_anywhere_in_two_is_read_the_same(newline: bytes) -> None:
    stream = b"".join(openai_events("gpt-4", (5, 6))[-3:]).replace(b"\n", newline)
    for cut in range(len(stream) + 1):
        assert read([stream[:cut], stream[cut:]], SSE) == TokenUsage(5, 6), cut


def test_openai_stream_without_usage_counts_nothing() -> None:
    assert read(openai_events("gpt-4"), SSE) is None


def test_anthropic_answer_adds_cached_input() -> None:
    message = anthropic_message("claude", (9, 4))
    message["usage"] |= {"cache_creation_input_tokens": 100, "cache_read_input_tokens": 20}
    assert read([json.dumps(message).encode()], JSON) == TokenUsage(129, 4)


@pytest.mark.parametrize("size", [1, 13, 100_000])
def test_anthropic_stream_input_from_start_output_from_delta(size: int) -> None:
    stream = b"".join(anthropic_events("claude", (17, 40)))
    assert read(split_every(stream, size), SSE) == TokenUsage(17, 40)


def test_openai_responses_stream() -> None:
    completed = {
        "type": "response.completed",
        "response": {"id": "r", "usage": {"input_tokens": 8, "output_tokens": 2}},
    }
    stream = b'event: response.created\ndata: {"type":"response.created"}\n\n'
    stream += b"event: response.completed\ndata: " + json.dumps(completed).encode() + b"\n\n"
    assert read([stream], SSE) == TokenUsage(8, 2)


@pytest.mark.parametrize(
    "usage",
    [
        None,
        "lots",
        [1, 2],
        {"prompt_tokens": "5", "completion_tokens": "6"},
        {"prompt_tokens": -1},
        {"prompt_tokens": True, "completion_tokens": False},
        {"prompt_tokens": MAX_TOKENS + 1},
        {"total_tokens": 11},
        {},
    ],
)
def test_malformed_usage_counts_nothing(usage: object) -> None:
    body = json.dumps({"id": "x", "usage": usage}).encode()
    assert read([body], JSON) is None
    event = b"data: " + json.dumps({"choices": [], "usage": usage}).encode() + b"\n\n"
    assert read([event], SSE) is None


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json at all",
        b'{"usage": {"prompt_tokens": 5, "completion_tokens"',
        b'{"usage"',
        b'{"content": "say \\"usage\\": {\\"prompt_tokens\\": 5}"}',
        b"\xff\xfe" * 100,
    ],
)
def test_broken_bodies_count_nothing(body: bytes) -> None:
    assert read([body], JSON) is None
    assert read([b"data: " + body + b"\n\n"], SSE) is None


def test_only_the_tail_of_a_long_json_answer_is_searched() -> None:
    padding = "x" * (3 * JSON_TAIL_BYTES)
    answer = {"data": padding, "usage": {"prompt_tokens": 1, "completion_tokens": 2}}
    assert read(split_every(json.dumps(answer).encode(), 4096), JSON) == TokenUsage(1, 2)
    early = {"usage": {"prompt_tokens": 1, "completion_tokens": 2}, "data": padding}
    assert read(split_every(json.dumps(early).encode(), 4096), JSON) is None


def test_an_event_longer_than_the_cap_is_skipped_and_the_next_one_read() -> None:
    huge = {"usage": {"prompt_tokens": 99, "completion_tokens": 99}, "pad": "y" * MAX_EVENT_BYTES}
    small = {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2}}
    stream = b"data: " + json.dumps(huge).encode() + b"\n\n"
    assert read(split_every(stream, 1000), SSE) is None
    stream += b"data: " + json.dumps(small).encode() + b"\n\n"
    assert read(split_every(stream, 1000), SSE) == TokenUsage(1, 2)
    # The same when the long event comes whole in one chunk, or byte by byte.
    assert read([stream], SSE) == TokenUsage(1, 2)
    assert read(split_every(stream, 1), SSE) == TokenUsage(1, 2)


@pytest.mark.parametrize(
    ("status", "headers"),
    [
        (400, JSON),
        (500, SSE),
        (200, [("content-type", "text/plain")]),
        (200, []),
        (200, [*JSON, ("content-encoding", "gzip")]),
    ],
)
def test_no_tap_for_errors_other_media_or_compressed_bodies(
    status: int, headers: list[tuple[str, str]]
) -> None:
    assert UsageTap.for_answer(status, headers) is None


def test_json_with_a_suffix_media_type_is_read() -> None:
    assert UsageTap.for_answer(200, [("content-type", "application/vnd.api+json")]) is not None


# -- metrics ----------------------------------------------------------------------------------


def samples(metrics: TokenMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def report(provider: str, model: str, inputs: int, outputs: int) -> UsageReport:
    return UsageReport("alice", provider, model, TokenUsage(inputs, outputs))


def token_metrics() -> TokenMetrics:
    return TokenMetrics(CollectorRegistry(), provider_labels())


def test_tokens_counted_by_provider_model_and_type() -> None:
    metrics = token_metrics()
    metrics.observe(report("openai", "gpt-4", 10, 3))
    metrics.observe(report("openai", "gpt-4", 5, 300))
    metrics.observe(report("anthropic", "claude", 1, 1))
    seen = samples(metrics)
    key = (("model", "gpt-4"), ("provider", "openai"), ("type", "input"))
    assert seen[("aicreds_router_tokens_total", key)] == 15
    key = (("model", "gpt-4"), ("provider", "openai"), ("type", "output"))
    assert seen[("aicreds_router_tokens_total", key)] == 303
    assert seen[("aicreds_router_token_usage_count", (("type", "input"),))] == 3
    assert seen[("aicreds_router_token_usage_sum", (("type", "output"),))] == 304
    # OpenTelemetry's buckets: 300 output tokens fall in (256, 1024].
    assert seen[("aicreds_router_token_usage_bucket", (("le", "256.0"), ("type", "output")))] == 2
    assert seen[("aicreds_router_token_usage_bucket", (("le", "1024.0"), ("type", "output")))] == 3


def test_distinct_models_are_bounded() -> None:
    metrics = token_metrics()
    for n in range(MAX_MODELS + 50):
        metrics.observe(report("p", f"model-{n}", 1, 1))
    seen = samples(metrics)
    models = {
        dict(labels)["model"] for (name, labels) in seen if name == "aicreds_router_tokens_total"
    }
    assert len(models) == MAX_MODELS + 1
    # The 101st pair, (p, other), is past the pair bound too: counted under other/other.
    other = (("model", "other"), ("provider", "other"), ("type", "input"))
    assert seen[("aicreds_router_tokens_total", other)] == 50
    # A pair seen before the bound was reached keeps its name.
    metrics.observe(report("p", "model-0", 1, 1))
    zero = (("model", "model-0"), ("provider", "p"), ("type", "input"))
    assert samples(metrics)[("aicreds_router_tokens_total", zero)] == 2


def test_key_like_or_long_models_and_providers_are_other() -> None:
    metrics = token_metrics()
    pasted = "sk-proj-a1B2c3D4e5F6g7H8i9J0"
    metrics.observe(report("openai", pasted, 1, 1))
    metrics.observe(report("openai", "m" * 65, 1, 1))
    metrics.observe(report("k3y9x8w7v6u5t4s3r2q1", "gpt-4o", 1, 1))
    text = generate_latest(metrics.registry).decode()
    assert pasted not in text and "m" * 65 not in text and "k3y9x8w7v6u5t4s3r2q1" not in text
    seen = samples(metrics)
    assert (
        seen[
            (
                "aicreds_router_tokens_total",
                (("model", "other"), ("provider", "openai"), ("type", "input")),
            )
        ]
        == 2
    )
    assert (
        seen[
            (
                "aicreds_router_tokens_total",
                (("model", "gpt-4o"), ("provider", "other"), ("type", "input")),
            )
        ]
        == 1
    )
