"""Rewriting the top-level `model` of a body, every other byte untouched."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.router.body_model import rewrite_model


def test_only_the_model_value_changes() -> None:
    body = (
        b'{ "stream":true,\n  "model" :\t"openai/gpt-4o" , "messages":[{"model":"inner",'
        b'"content":"caf\xc3\xa9 \\u00e9"}], "n": 1.50e0 }'
    )
    assert rewrite_model(body, "gpt-4o") == body.replace(b'"openai/gpt-4o"', b'"gpt-4o"')


def test_escaped_key_and_non_ascii_before_the_member() -> None:
    body = '{"note":"日本語","mod\\u0065l":"p/m"}'.encode()
    assert rewrite_model(body, "m") == '{"note":"日本語","mod\\u0065l":"m"}'.encode()


@pytest.mark.parametrize(
    "body",
    [b"", b"[1, 2]", b'{"model": 5}', b'{"model": "p/m"', b"not json", b'{"a": 1}', b"\xff\xfe"],
)
def test_other_bodies_pass_unchanged(body: bytes) -> None:
    assert rewrite_model(body, "m") is body


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=10,
)


@settings(deadline=None)
@given(st.dictionaries(st.text(max_size=6), json_values, max_size=5), st.text(max_size=10))
def test_rewrite_equals_semantic_replacement(members: dict[str, object], model: str) -> None:
    members["model"] = "provider/old"
    body = json.dumps(members, ensure_ascii=False, indent=1).encode()
    rewritten = rewrite_model(body, model)
    assert json.loads(rewritten) == {**json.loads(body), "model": model}
    # Everything around the value is byte-identical.
    head, _, tail = body.partition(b'"model": "provider/old"')
    assert rewritten.startswith(head) and rewritten.endswith(tail)
