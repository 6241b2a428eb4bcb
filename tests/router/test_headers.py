"""Which headers and which URL go upstream, and which headers come back."""

from __future__ import annotations

import pytest

from services.router.errors import BadInvokeRequest
from services.router.headers import (
    downstream_response_headers,
    upstream_request_headers,
)
from services.router.invocation import upstream_url


def test_client_auth_never_goes_upstream_and_provider_wins() -> None:
    client = [
        ("Authorization", "Bearer sk-aic-client-token"),
        ("x-api-key", "sk-aic-client-token"),
        ("Cookie", "session=abc"),
        ("Content-Type", "application/json"),
        ("Accept", "text/event-stream"),
        ("anthropic-version", "2023-06-01"),
        ("X-Forwarded-For", "10.0.0.1"),
        ("User-Agent", "client/1"),
    ]
    provider = [("Authorization", "Bearer sk-upstream"), ("user-agent", "provider/1")]
    assert upstream_request_headers(provider, client) == [
        ("Authorization", "Bearer sk-upstream"),
        ("user-agent", "provider/1"),
        ("Content-Type", "application/json"),
        ("Accept", "text/event-stream"),
        ("anthropic-version", "2023-06-01"),
    ]


def test_hop_by_hop_and_computed_headers_are_dropped_from_provider_config() -> None:
    provider = [("Connection", "close"), ("Host", "evil"), ("Content-Length", "1"), ("X-K", "v")]
    assert upstream_request_headers(provider, []) == [("X-K", "v")]


@pytest.mark.parametrize(("name", "value"), [("X-K", "a\r\nInjected: 1"), ("Bad Name", "v")])
def test_unsendable_headers_are_refused_without_echoing_the_value(name: str, value: str) -> None:
    with pytest.raises(BadInvokeRequest) as caught:
        upstream_request_headers([(name, value)], [])
    assert "Injected" not in caught.value.message


def test_response_hop_by_hop_headers_are_dropped() -> None:
    headers = [
        ("Content-Type", "text/event-stream"),
        ("Transfer-Encoding", "chunked"),
        ("Connection", "keep-alive, X-Private"),
        ("X-Private", "1"),
        ("Keep-Alive", "timeout=5"),
        ("x-request-id", "r1"),
    ]
    assert downstream_response_headers(headers) == [
        ("Content-Type", "text/event-stream"),
        ("x-request-id", "r1"),
    ]


@pytest.mark.parametrize(
    ("base", "path", "query", "url"),
    [
        (
            "https://api.openai.com/v1",
            "/chat/completions",
            "",
            "https://api.openai.com/v1/chat/completions",
        ),
        (
            "https://api.openai.com/v1/",
            "chat/completions",
            "a=1",
            "https://api.openai.com/v1/chat/completions?a=1",
        ),
        ("https://api.anthropic.com", "/v1/messages", "", "https://api.anthropic.com/v1/messages"),
        (
            "https://x.example/openai?api-version=2024",
            "/chat",
            "b=2",
            "https://x.example/openai/chat?api-version=2024&b=2",
        ),
        ("http://127.0.0.1:8080", "/@evil.example/x", "", "http://127.0.0.1:8080/@evil.example/x"),
    ],
)
def test_upstream_url(base: str, path: str, query: str, url: str) -> None:
    assert upstream_url(base, path, query) == url


@pytest.mark.parametrize("path", ["/../admin", "/a/./b", "/x?y=1", "/a b", "/x#f"])
def test_paths_that_could_leave_the_base_url_are_refused(path: str) -> None:
    with pytest.raises(BadInvokeRequest):
        upstream_url("https://api.openai.com/v1", path, "")
