"""The fake upstream is faithful enough that the official SDKs, pointed straight at it, work.

If these fail, a gateway test failure says nothing about the gateway.
"""

from __future__ import annotations

import anthropic
import openai
import pytest

from tests.support.fake_upstream import ANSWER_TEXT, EMBEDDING, STREAM_PIECES, FakeUpstream


@pytest.fixture(scope="module")
def upstream() -> object:
    with FakeUpstream() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(upstream: FakeUpstream) -> None:
    upstream.reset()


def test_openai_sdk_parses_every_shape(upstream: FakeUpstream) -> None:
    with openai.OpenAI(
        base_url=f"{upstream.origin}/v1", api_key="sk-test", max_retries=0
    ) as client:
        completion = client.chat.completions.create(
            model="gpt-4", messages=[{"role": "user", "content": "Hello!"}]
        )
        assert completion.choices[0].message.content == ANSWER_TEXT
        pieces = [
            chunk.choices[0].delta.content
            for chunk in client.chat.completions.create(
                model="gpt-4", messages=[{"role": "user", "content": "Hi"}], stream=True
            )
            if chunk.choices and chunk.choices[0].delta.content
        ]
        assert tuple(pieces) == STREAM_PIECES
        embedding = client.embeddings.create(model="text-embedding-3-small", input="hi")
        assert embedding.data[0].embedding == list(EMBEDDING)
        assert [m.id for m in client.models.list()] == ["gpt-4"]
    assert upstream.last_request().header("authorization") == "Bearer sk-test"


def test_anthropic_sdk_parses_message_and_stream(upstream: FakeUpstream) -> None:
    with anthropic.Anthropic(base_url=upstream.origin, api_key="sk-ant", max_retries=0) as client:
        message = client.messages.create(
            model="claude-3.5-sonnet", max_tokens=100, messages=[{"role": "user", "content": "Hi"}]
        )
        assert message.content[0].type == "text" and message.content[0].text == ANSWER_TEXT
        with client.messages.stream(
            model="claude-3.5-sonnet", max_tokens=100, messages=[{"role": "user", "content": "Hi"}]
        ) as stream:
            assert "".join(stream.text_stream) == ANSWER_TEXT
            assert stream.get_final_message().stop_reason == "end_turn"
    # anthropic 2.x sends `api_key` as `Authorization: Bearer`, no longer as `x-api-key`.
    assert upstream.last_request().header("authorization") == "Bearer sk-ant"


def test_unauthorized_answers_raise_the_sdks_authentication_error(upstream: FakeUpstream) -> None:
    upstream.unauthorized = True
    with openai.OpenAI(base_url=f"{upstream.origin}/v1", api_key="sk-x", max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError, match="Incorrect API key"):
            client.models.list()
    with anthropic.Anthropic(base_url=upstream.origin, api_key="x", max_retries=0) as client:
        with pytest.raises(anthropic.AuthenticationError, match="invalid x-api-key"):
            client.messages.create(model="c", max_tokens=1, messages=[])


def test_held_stream_sends_first_chunk_then_waits_and_notices_disconnect(
    upstream: FakeUpstream,
) -> None:
    upstream.hold_streams()
    client = openai.OpenAI(base_url=f"{upstream.origin}/v1", api_key="sk-x", max_retries=0)
    stream = client.chat.completions.create(model="gpt-4", messages=[], stream=True)
    first = next(iter(stream))
    assert first.choices[0].delta.content == STREAM_PIECES[0]
    assert not upstream.watch.last_chunk_sent.is_set()
    stream.close()
    client.close()
    assert upstream.watch.disconnected.wait(1.0)
