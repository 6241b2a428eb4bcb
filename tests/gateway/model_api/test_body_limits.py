"""Request body limits: `GATEWAY_LLM_MAX_BODY` for the model endpoints, `GATEWAY_MAX_BODY` for
REST v2 (SPEC 2.2), each answered with a 413 in its endpoint's own error shape.

The stack runs with small limits (REST 2 KiB, model calls 8 KiB) so that the bodies stay small.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.support.background import BackgroundLoop
from tests.support.fake_upstream import FakeUpstream
from tests.support.stack import LlmStack, llm_stack

REST_LIMIT = 2048
LLM_LIMIT = 8192


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


@pytest.fixture(scope="module")
def stack(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlmStack]:
    servers = BackgroundLoop()
    try:
        yield servers.enter(
            llm_stack(
                tmp_path_factory.mktemp("limits"),
                upstream,
                max_body=REST_LIMIT,
                llm_max_body=LLM_LIMIT,
            )
        )
    finally:
        servers.close()


def _chat(model: str, size: int) -> bytes:
    """A chat request of exactly `size` bytes."""
    head = {"model": model, "messages": [{"role": "user", "content": ""}]}
    padding = size - len(json.dumps(head).encode())
    head["messages"][0]["content"] = "x" * padding  # type: ignore[index]
    body = json.dumps(head).encode()
    assert len(body) == size
    return body


def _post(stack: LlmStack, path: str, body: bytes) -> httpx.Response:
    headers = {"Authorization": f"Bearer {stack.tokens.invoke}", "content-type": "application/json"}
    return httpx.post(f"{stack.url}{path}", content=body, headers=headers, timeout=10)


def test_a_model_call_over_the_rest_limit_is_served(
    stack: LlmStack, upstream: FakeUpstream
) -> None:
    upstream.reset()
    body = _chat("gpt-4", LLM_LIMIT)  # 4 times the REST limit, exactly the model-call limit
    response = _post(stack, "/v1/chat/completions", body)
    assert response.status_code == 200, response.text
    assert upstream.last_request().body == body


def test_a_model_call_over_its_limit_is_413_in_openais_shape(
    stack: LlmStack, upstream: FakeUpstream
) -> None:
    upstream.reset()
    response = _post(stack, "/v1/chat/completions", _chat("gpt-4", LLM_LIMIT + 1))
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "payload_too_large" and error["type"] == "invalid_request_error"
    assert str(LLM_LIMIT) in error["message"]
    assert upstream.requests == []


def test_a_model_call_over_its_limit_is_413_in_anthropics_shape(
    stack: LlmStack, upstream: FakeUpstream
) -> None:
    upstream.reset()
    response = _post(stack, "/v1/messages", _chat("claude-3.5-sonnet", LLM_LIMIT + 1))
    assert response.status_code == 413
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == "request_too_large"
    assert upstream.requests == []


def test_rest_keeps_its_own_limit(stack: LlmStack) -> None:
    value = "v" * REST_LIMIT  # the JSON around it takes the body over the REST limit
    response = httpx.put(
        f"{stack.url}/api/v2/users/me/ai-credentials/big",
        json={"value": value},
        headers={"Authorization": f"Bearer {stack.tokens.invoke}"},
        timeout=10,
    )
    assert response.status_code == 413
    assert response.json()["error"] == {
        "code": "payload_too_large",
        "message": f"the request body is larger than {REST_LIMIT} bytes",
    }
