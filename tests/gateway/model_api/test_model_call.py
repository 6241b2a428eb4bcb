"""One model call (`model_call.py`): what reaches the router, and the SDKs' answers."""

from __future__ import annotations

import json

import httpx
import openai

from tests.gateway.model_api.conftest import (
    GOOD,
    JSON,
    SSE,
    USER,
    Gateway,
    anthropic_client,
    openai_client,
)
from tests.gateway.support.stub_backends import RouterScript
from tests.support.fake_upstream import (
    ANSWER_TEXT,
    STREAM_PIECES,
    anthropic_events,
    anthropic_message,
    chat_completion,
    openai_events,
)

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
