"""Issue 6 end to end: the official SDKs, unmodified, against a live vault, router and gateway.

The gateway is the SDKs' `base_url`; behind it, the router substitutes alice's stored provider
keys into the headers her providers configure and calls the fake upstream on 127.0.0.1, which
records what it received. Every test checks what a user of the SDK would notice.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from langchain_openai import ChatOpenAI

from tests.support.background import BackgroundLoop
from tests.support.fake_upstream import ANSWER_TEXT, EMBEDDING, STREAM_PIECES, FakeUpstream
from tests.support.stack import ANTHROPIC_KEY, OPENAI_KEY, LlmStack, llm_stack

CLIENT_SDK_LOGGERS = ("openai", "anthropic", "langchain", "httpx2")


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


@pytest.fixture(scope="module")
def servers() -> Iterator[BackgroundLoop]:
    loop = BackgroundLoop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def stack(
    servers: BackgroundLoop, upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> LlmStack:
    return servers.enter(llm_stack(tmp_path_factory.mktemp("llm-stack"), upstream))


@pytest.fixture(autouse=True)
def _fresh(upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch) -> None:
    upstream.reset()
    for name in (
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "OPENAI_ORG_ID",
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_AUTH_TOKEN",
        "ANTHROPIC_BASE_URL",
    ):
        monkeypatch.delenv(name, raising=False)


def openai_client(stack: LlmStack, token: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=stack.openai_url, api_key=token or stack.tokens.invoke, max_retries=0
    )


def anthropic_client(stack: LlmStack, token: str | None = None) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=stack.url, api_key=token or stack.tokens.invoke, max_retries=0
    )


def assert_upstream_saw_only_provider_keys(upstream: FakeUpstream, stack: LlmStack) -> None:
    """The upstream got the substituted provider key, and never the client's own token."""
    assert upstream.requests, "nothing reached the upstream"
    for request in upstream.requests:
        seen = " ".join(v for _, v in request.headers) + request.body.decode("latin-1")
        assert stack.tokens.invoke not in seen
        assert "sk-aic-" not in seen
        # Only allowlisted client headers travel: none of the SDKs' x-stainless-* telemetry.
        assert not [name for name, _ in request.headers if name.startswith("x-stainless")]
        assert request.header("cookie") is None
        # ... but the client's own user-agent does (the router's default replaced).
        assert request.header("user-agent") not in (None, "aicreds-router")
        if request.path == "/v1/messages":
            assert request.header("x-api-key") == ANTHROPIC_KEY
            assert request.header("authorization") is None
        else:
            assert request.header("authorization") == f"Bearer {OPENAI_KEY}"
            assert request.header("x-api-key") is None


# -- openai ---------------------------------------------------------------------------------------


def test_openai_sync_chat_completion_with_and_without_stream(
    stack: LlmStack, upstream: FakeUpstream
) -> None:
    with openai_client(stack) as client:
        completion = client.chat.completions.create(
            model="gpt-4", messages=[{"role": "user", "content": "Hello!"}]
        )
        assert completion.choices[0].message.content == ANSWER_TEXT
        stream = client.chat.completions.create(
            model="gpt-4", messages=[{"role": "user", "content": "Hello!"}], stream=True
        )
        pieces = [c.choices[0].delta.content for c in stream if c.choices]
    assert "".join(p for p in pieces if p) == ANSWER_TEXT
    assert [r.path for r in upstream.requests] == ["/v1/chat/completions"] * 2
    assert upstream.requests[1].json()["stream"] is True
    assert_upstream_saw_only_provider_keys(upstream, stack)


async def test_openai_async_chat_completion_with_and_without_stream(
    stack: LlmStack, upstream: FakeUpstream
) -> None:
    async with openai.AsyncOpenAI(
        base_url=stack.openai_url, api_key=stack.tokens.invoke, max_retries=0
    ) as client:
        completion = await client.chat.completions.create(
            model="gpt-4", messages=[{"role": "user", "content": "Hello!"}]
        )
        assert completion.choices[0].message.content == ANSWER_TEXT
        stream = await client.chat.completions.create(
            model="gpt-4", messages=[{"role": "user", "content": "Hello!"}], stream=True
        )
        pieces = [c.choices[0].delta.content async for c in stream if c.choices]
    assert "".join(p for p in pieces if p) == ANSWER_TEXT
    assert_upstream_saw_only_provider_keys(upstream, stack)


def test_openai_models_list_shows_every_provider_model(stack: LlmStack) -> None:
    with openai_client(stack) as client:
        models = {m.id: m.owned_by for m in client.models.list()}
    assert models == {
        "claude-3.5-sonnet": "anthropic",
        "gpt-4": "openai",
        "text-embedding-3-small": "openai",
        "strict-model": "strict",
        "warned-model": "warned",
    }


def test_openai_embeddings_pass_through(stack: LlmStack, upstream: FakeUpstream) -> None:
    with openai_client(stack) as client:
        result = client.embeddings.create(model="text-embedding-3-small", input="Hello!")
    assert result.data[0].embedding == list(EMBEDDING)
    assert upstream.last_request().path == "/v1/embeddings"
    assert upstream.last_request().json()["input"] == "Hello!"
    assert_upstream_saw_only_provider_keys(upstream, stack)


def test_body_is_forwarded_byte_for_byte_and_a_provider_prefix_is_stripped(
    stack: LlmStack, upstream: FakeUpstream
) -> None:
    body = b'{ "messages" : [ {"role":"user","content":"Hi \\u00e9"} ],\n  "model": "gpt-4" }'
    headers = {"Authorization": f"Bearer {stack.tokens.invoke}", "Content-Type": "application/json"}
    response = httpx.post(f"{stack.openai_url}/chat/completions", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert upstream.last_request().body == body

    prefixed = body.replace(b'"gpt-4"', b'"openai/gpt-4"')
    response = httpx.post(f"{stack.openai_url}/chat/completions", content=prefixed, headers=headers)
    assert response.status_code == 200, response.text
    assert upstream.last_request().json()["model"] == "gpt-4"


def test_langchain_chat_openai_exactly_as_the_seed_writes_it(
    stack: LlmStack, upstream: FakeUpstream
) -> None:
    # A plain str, as the seed (and LangChain's docs) pass it; the field is typed SecretStr and
    # pydantic converts it.
    llm = ChatOpenAI(
        base_url=stack.openai_url,
        api_key=stack.tokens.invoke,  # type: ignore[arg-type]
        model="gpt-4",
    )
    response = llm.invoke("Hello!")
    assert response.content == ANSWER_TEXT
    assert upstream.last_request().json()["messages"] == [{"role": "user", "content": "Hello!"}]
    assert_upstream_saw_only_provider_keys(upstream, stack)


def test_the_seeds_debug_curl_on_chat_completions(stack: LlmStack, upstream: FakeUpstream) -> None:
    """The seed's `curl .../v1/chat/completions -H Authorization -H "X-Debug-Auth: true" -d`."""
    token = stack.tokens.invoke
    response = httpx.post(
        f"{stack.openai_url}/chat/completions",
        content=b'{"model": "gpt-4", "messages": [{"role": "user", "content": "Hello!"}]}',
        headers={
            "Authorization": f"Bearer {token}",
            "X-Debug-Auth": "true",
            # what `curl -d` sends
            "Content-Type": "application/x-www-form-urlencoded",
            "User-Agent": "curl/8.5.0",
            "Accept": "*/*",
        },
    )
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == ANSWER_TEXT
    debug = response.headers["x-debug-auth"]
    assert "result=ok" in debug and "method=bearer" in debug and "llm:invoke" in debug
    assert not any(token[i : i + 12] in debug for i in range(len(token) - 11))
    assert response.headers["x-ratelimit-limit"]
    assert_upstream_saw_only_provider_keys(upstream, stack)

    denied = httpx.post(
        f"{stack.openai_url}/chat/completions",
        content=b'{"model": "gpt-4", "messages": []}',
        headers={"Authorization": "Bearer sk-aic-" + "n" * 43, "X-Debug-Auth": "true"},
    )
    assert denied.status_code == 401
    assert denied.json()["error"]["type"] == "authentication_error"
    assert "reason=unknown" in denied.headers["x-debug-auth"]


# -- anthropic ------------------------------------------------------------------------------------


@pytest.mark.parametrize("auth", ["api_key", "auth_token", "x-api-key"])
def test_anthropic_messages_with_and_without_stream(
    stack: LlmStack, upstream: FakeUpstream, auth: str
) -> None:
    token = stack.tokens.invoke
    # anthropic 2.x sends `api_key` as `Authorization: Bearer` too; the x-api-key header is
    # what anthropic 0.x/1.x sent for `api_key` and what curl users send.
    options: dict[str, dict[str, Any]] = {
        "api_key": {"api_key": token},
        "auth_token": {"auth_token": token},
        "x-api-key": {"default_headers": {"x-api-key": token}},
    }
    with anthropic.Anthropic(base_url=stack.url, max_retries=0, **options[auth]) as client:
        message = client.messages.create(
            model="claude-3.5-sonnet",
            max_tokens=100,
            messages=[{"role": "user", "content": "Hello!"}],
        )
        assert message.content[0].type == "text" and message.content[0].text == ANSWER_TEXT
        with client.messages.stream(
            model="claude-3.5-sonnet",
            max_tokens=100,
            messages=[{"role": "user", "content": "Hello!"}],
        ) as stream:
            assert "".join(stream.text_stream) == ANSWER_TEXT
            assert stream.get_final_message().stop_reason == "end_turn"
    assert [r.path for r in upstream.requests] == ["/v1/messages"] * 2
    assert all(r.header("anthropic-version") for r in upstream.requests)
    assert_upstream_saw_only_provider_keys(upstream, stack)


async def test_async_anthropic_stream(stack: LlmStack, upstream: FakeUpstream) -> None:
    async with anthropic.AsyncAnthropic(
        base_url=stack.url, api_key=stack.tokens.invoke, max_retries=0
    ) as client:
        stream = await client.messages.create(
            model="claude-3.5-sonnet",
            max_tokens=100,
            messages=[{"role": "user", "content": "Hello!"}],
            stream=True,
        )
        kinds = [event.type async for event in stream]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert kinds.count("content_block_delta") == len(STREAM_PIECES)


# -- streaming is not buffered, and a disconnect reaches the upstream -----------------------------


def test_first_openai_chunk_reaches_the_sdk_before_the_upstream_sends_the_last(
    stack: LlmStack, upstream: FakeUpstream
) -> None:
    upstream.hold_streams()
    with openai_client(stack) as client:
        stream = client.chat.completions.create(model="gpt-4", messages=[], stream=True)
        iterator = iter(stream)
        first = next(iterator)
        assert first.choices[0].delta.content == STREAM_PIECES[0]
        assert not upstream.watch.last_chunk_sent.is_set()
        upstream.release_streams()
        rest = [c.choices[0].delta.content for c in iterator if c.choices]
    assert STREAM_PIECES[0] + "".join(p for p in rest if p) == ANSWER_TEXT
    assert upstream.watch.last_chunk_sent.is_set()


def test_first_anthropic_event_reaches_the_sdk_before_the_upstream_sends_the_last(
    stack: LlmStack, upstream: FakeUpstream
) -> None:
    upstream.hold_streams()
    with anthropic_client(stack) as client:
        stream = client.messages.create(
            model="claude-3.5-sonnet", max_tokens=100, messages=[], stream=True
        )
        iterator = iter(stream)
        assert next(iterator).type == "message_start"
        assert not upstream.watch.last_chunk_sent.is_set()
        upstream.release_streams()
        assert [e.type for e in iterator][-1] == "message_stop"


@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
def test_client_disconnect_mid_stream_reaches_the_upstream_within_a_second(
    stack: LlmStack, upstream: FakeUpstream, sdk: str
) -> None:
    upstream.hold_streams()
    client: openai.OpenAI | anthropic.Anthropic
    stream: openai.Stream[Any] | anthropic.Stream[Any]
    if sdk == "openai":
        client = openai_client(stack)
        stream = client.chat.completions.create(model="gpt-4", messages=[], stream=True)
    else:
        client = anthropic_client(stack)
        stream = client.messages.create(
            model="claude-3.5-sonnet", max_tokens=10, messages=[], stream=True
        )
    next(iter(stream))
    closed_at = time.monotonic()
    stream.close()
    client.close()
    assert upstream.watch.disconnected.wait(1.0), "the upstream never saw the client go away"
    assert upstream.watch.disconnected_at is not None
    assert upstream.watch.disconnected_at - closed_at < 1.0
    assert not upstream.watch.last_chunk_sent.is_set()


# -- errors: each SDK raises its documented exception with a useful message -----------------------


def test_unknown_model_is_not_found(stack: LlmStack, upstream: FakeUpstream) -> None:
    with openai_client(stack) as client:
        with pytest.raises(openai.NotFoundError, match="gpt-17") as err:
            client.chat.completions.create(model="gpt-17", messages=[])
    assert err.value.code == "model_not_found"
    with anthropic_client(stack) as ac:
        with pytest.raises(anthropic.NotFoundError, match="claude-9") as aerr:
            ac.messages.create(model="claude-9", max_tokens=1, messages=[])
    assert aerr.value.type == "not_found_error"
    assert upstream.requests == []


def test_wrong_token_is_an_authentication_error(stack: LlmStack, upstream: FakeUpstream) -> None:
    wrong = "sk-aic-" + "x" * 43
    with openai_client(stack, wrong) as client:
        with pytest.raises(openai.AuthenticationError, match="invalid API token"):
            client.chat.completions.create(model="gpt-4", messages=[])
    with anthropic_client(stack, wrong) as ac:
        with pytest.raises(anthropic.AuthenticationError, match="invalid API token") as err:
            ac.messages.create(model="claude-3.5-sonnet", max_tokens=1, messages=[])
    assert err.value.type == "authentication_error"
    assert upstream.requests == []


def test_missing_scope_is_permission_denied(stack: LlmStack, upstream: FakeUpstream) -> None:
    with openai_client(stack, stack.tokens.no_llm_scope) as client:
        with pytest.raises(openai.PermissionDeniedError, match="llm:invoke"):
            client.chat.completions.create(model="gpt-4", messages=[])
        with pytest.raises(openai.PermissionDeniedError, match="llm:invoke"):
            client.models.list()
    with anthropic_client(stack, stack.tokens.no_llm_scope) as ac:
        with pytest.raises(anthropic.PermissionDeniedError, match="llm:invoke"):
            ac.messages.create(model="claude-3.5-sonnet", max_tokens=1, messages=[])
    assert upstream.requests == []


def test_upstream_401_reaches_the_sdk_as_the_vendor_said_it(
    stack: LlmStack, upstream: FakeUpstream
) -> None:
    upstream.unauthorized = True
    with openai_client(stack) as client:
        with pytest.raises(openai.AuthenticationError, match="Incorrect API key") as err:
            client.chat.completions.create(model="gpt-4", messages=[])
    assert err.value.code == "invalid_api_key"
    with anthropic_client(stack) as ac:
        with pytest.raises(anthropic.AuthenticationError, match="invalid x-api-key"):
            ac.messages.create(model="claude-3.5-sonnet", max_tokens=1, messages=[])


def test_missing_credential_with_on_missing_error_is_424_naming_the_key(
    stack: LlmStack, upstream: FakeUpstream
) -> None:
    with openai_client(stack) as client:
        with pytest.raises(openai.APIStatusError, match="strict_api_key") as err:
            client.chat.completions.create(model="strict-model", messages=[])
    assert (err.value.status_code, err.value.code) == (424, "credential_not_found")
    assert upstream.requests == []


def test_missing_credential_with_warn_proceeds_with_a_warning_header(
    stack: LlmStack, upstream: FakeUpstream
) -> None:
    with openai_client(stack) as client:
        raw = client.chat.completions.with_raw_response.create(model="warned-model", messages=[])
    assert raw.parse().choices[0].message.content == ANSWER_TEXT
    assert raw.headers.get_list("x-credential-warning") == ["Credential not found: openai_org"]
    assert upstream.last_request().header("openai-organization") == "{{credential:openai_org}}"


def test_missing_credential_warning_header_on_a_streamed_answer(stack: LlmStack) -> None:
    """The router sends warnings in initial metadata too, so they precede the streamed body."""
    with openai_client(stack) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="warned-model", messages=[], stream=True
        )
        warnings = raw.headers.get_list("x-credential-warning")
        list(raw.parse())
    assert warnings == ["Credential not found: openai_org"]


def test_rate_limited_client_gets_429_with_retry_after(
    servers: BackgroundLoop, upstream: FakeUpstream, tmp_path: Path
) -> None:
    limited = servers.enter(llm_stack(tmp_path, upstream, rate_limit=0.01, rate_burst=1))
    with openai_client(limited) as client:
        client.chat.completions.create(model="gpt-4", messages=[])
        with pytest.raises(openai.RateLimitError, match="rate limit") as err:
            client.chat.completions.create(model="gpt-4", messages=[])
    assert int(err.value.response.headers["retry-after"]) >= 1
    with anthropic_client(limited) as ac:
        with pytest.raises(anthropic.RateLimitError, match="rate limit"):
            ac.messages.create(model="claude-3.5-sonnet", max_tokens=1, messages=[])


@pytest.mark.parametrize("auth_cache", ["warm", "cold"])
def test_vault_outage_is_a_server_error_naming_the_vault(
    servers: BackgroundLoop, upstream: FakeUpstream, tmp_path: Path, auth_cache: str
) -> None:
    # warm: the gateway still admits the token from its cache and the router cannot Resolve;
    # cold: the gateway itself cannot authenticate the token.
    ttl = 60.0 if auth_cache == "warm" else 0.0
    doomed = servers.enter(llm_stack(tmp_path, upstream, auth_cache_ttl=ttl))
    with openai_client(doomed) as client:
        client.models.list()
        servers.run(doomed.vault.running.server.server.stop(0))
        with pytest.raises(openai.InternalServerError, match="vault") as err:
            client.chat.completions.create(model="gpt-4", messages=[])
        assert err.value.status_code == 503
        with pytest.raises(openai.InternalServerError, match="vault"):
            client.models.list()
    with anthropic_client(doomed) as ac:
        with pytest.raises(anthropic.ServiceUnavailableError, match="vault"):
            ac.messages.create(model="claude-3.5-sonnet", max_tokens=1, messages=[])
    assert upstream.requests == []


# -- secrets --------------------------------------------------------------------------------------


def test_no_secret_in_any_service_log_record(
    stack: LlmStack, upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with openai_client(stack) as client:
        client.chat.completions.create(model="gpt-4", messages=[])
        list(client.chat.completions.create(model="gpt-4", messages=[], stream=True))
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="nope", messages=[])
    with anthropic_client(stack) as ac:
        ac.messages.create(model="claude-3.5-sonnet", max_tokens=1, messages=[])
    service_records = [r for r in caplog.records if not r.name.startswith(CLIENT_SDK_LOGGERS)]
    assert any(r.name.startswith("aicreds") for r in service_records)
    text = "\n".join(
        f"{r.getMessage()} {json.dumps(getattr(r, 'fields', None), default=str)}"
        for r in service_records
    )
    for secret in stack.secrets():
        assert secret not in text
