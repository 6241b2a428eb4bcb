"""`body_fields.scan_top_level` answers as `json.loads` does, without building the body."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.gateway.errors import ApiError
from services.gateway.model_api import call_options
from services.gateway.model_api.body_fields import MAX_DEPTH, NotJson, TooComplex, scan_top_level
from services.gateway.model_api.call_options import (
    PARSE_WHOLE_BELOW,
    CallOptions,
    read_call_options,
    scan_budget_seconds,
)

NAMES = ("model", "stream")
# Keys and model strings: any text, surrogate pairs (astral characters) included.
text = st.text(st.characters(codec="utf-8"), max_size=12)
keys = st.one_of(text, st.sampled_from(["model", "stream", "Model", "model ", "stream\u0000"]))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    text,
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(st.tuples(keys, inner), max_size=4),  # pairs: duplicates allowed
    ),
    max_leaves=25,
)


def _encode(value: Any, rng: st.DataObject) -> str:
    """JSON text of `value` (a list of pairs is an object), with random whitespace and escapes."""
    ws = rng.draw(st.sampled_from(["", " ", "\n\t ", "\r\n"]))
    ensure_ascii = rng.draw(st.booleans())
    if isinstance(value, list) and value and all(isinstance(v, tuple) for v in value):
        members = [
            f"{ws}{json.dumps(k, ensure_ascii=ensure_ascii)}{ws}:{ws}{_encode(v, rng)}"
            for k, v in value
        ]
        return "{" + ",".join(members) + ws + "}"
    if isinstance(value, list):
        return "[" + ",".join(ws + _encode(v, rng) for v in value) + ws + "]"
    return json.dumps(value, ensure_ascii=ensure_ascii)


def _expected(body: bytes) -> CallOptions | str:
    try:
        payload = json.loads(body) if body else None
    except (ValueError, RecursionError):
        return "invalid"
    if not isinstance(payload, dict):
        return "not an object"
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        return "no model"
    return CallOptions(model, payload.get("stream") is True)


#: Both readers: `json.loads` of a small body, and the scanner (forced for any size by 0).
READERS = pytest.mark.parametrize("whole_below", [PARSE_WHOLE_BELOW, 0], ids=["parsed", "scanned"])


def _actual(body: bytes, whole_below: int) -> CallOptions | str:
    try:
        return read_call_options(body, parse_whole_below=whole_below)
    except ApiError as err:
        assert err.status == 400
        if "not valid JSON" in err.message:
            return "invalid"
        return "not an object" if "JSON object" in err.message else "no model"


members = st.lists(st.tuples(keys, st.one_of(values, text, st.booleans())), max_size=8)


@READERS
@settings(max_examples=400, deadline=None)
@given(members, st.data())
def test_same_answer_as_json_loads_for_valid_objects(
    whole_below: int, pairs: list[Any], data: st.DataObject
) -> None:
    body = (_encode(pairs, data) if pairs else "{}").encode()
    assert _actual(body, whole_below) == _expected(body)


@READERS
@settings(max_examples=300, deadline=None)
@given(values, st.data())
def test_same_answer_for_any_valid_value(whole_below: int, value: Any, data: st.DataObject) -> None:
    body = _encode(value, data).encode()
    assert _actual(body, whole_below) == _expected(body)


@READERS
@settings(max_examples=600, deadline=None)
@given(members, st.data())
def test_a_damaged_body_is_refused_exactly_when_json_loads_refuses_it(
    whole_below: int, pairs: list[Any], data: st.DataObject
) -> None:
    body = bytearray(_encode(pairs, data).encode())
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(body)))
        action = data.draw(st.sampled_from(["insert", "delete", "replace"]))
        piece = data.draw(st.sampled_from([*b'{}[]:,"\\ 0-1e.tfnx', 0x01, 0xC3]))
        if action == "insert":
            body[at:at] = bytes([piece])
        elif at < len(body):
            body[at : at + 1] = b"" if action == "delete" else bytes([piece])
    assert _actual(bytes(body), whole_below) == _expected(bytes(body))


@pytest.mark.parametrize(
    ("body", "model", "stream"),
    [
        (b'{"model":"a","model":"b"}', "b", False),
        (b'{"stream":true,"model":"m","stream":false}', "m", False),
        (b'{"model":"m","stream":false,"stream":true}', "m", True),
        (b'{"\\u006d\\u006F\\u0064el":"m","str\\u0065am":true}', "m", True),
        (b'{"model":"\\ud83d\\ude00 \\u00e9\\"\\\\/"}', '\U0001f600 \u00e9"\\/', False),
        (b'{"model":"m","stream":"true"}', "m", False),
        (b'{"model":"m","stream":1}', "m", False),
        (b'{"messages":[{"model":"x","stream":true}],"model":"m"}', "m", False),
        (b'{"model":"m","x":[NaN,Infinity,-Infinity,1e400]}', "m", False),
        (b' \n{"model" : "m" , "stream" : true }\r\n', "m", True),
    ],
)
@READERS
def test_known_cases(body: bytes, model: str, stream: bool, whole_below: int) -> None:
    options = read_call_options(body, parse_whole_below=whole_below)
    assert options == CallOptions(model, stream) == _expected(body)


@pytest.mark.parametrize(
    "body",
    [
        b'{"model":"m"} x',
        b'{"model":"m",}',
        b'{"model":"m","a":[1,]}',
        b'{"model":"m","a":01}',
        b'{"model":"m","a":1.}',
        b'{"model":"m","a":"\x01"}',
        b'{"model":"m","a":"\\x"}',
        b'{"model":"m","a":tru}',
        b'{"model":"m" "a":1}',
        b'{model:"m"}',
        b'{"model":"m","a":{"b"}}',
        b'{"model":"m","a":[[[[[[1]]]]]}',
        b'{"model":"\xc3"}',
    ],
)
@READERS
def test_invalid_bodies_are_400(body: bytes, whole_below: int) -> None:
    assert _expected(body) == "invalid"
    with pytest.raises(ApiError) as caught:
        read_call_options(body, parse_whole_below=whole_below)
    assert caught.value.status == 400


@READERS
def test_an_integer_too_long_to_parse_is_400_as_json_loads_refuses_it(whole_below: int) -> None:
    limit = sys.get_int_max_str_digits()
    fits = b'{"model":"m","n":' + b"7" * limit + b"}"
    assert read_call_options(fits, parse_whole_below=whole_below).model == "m"
    for too_long in (b"7" * (limit + 1), b"-" + b"7" * (limit + 1), b"[" + b"7" * 5000 + b"]"):
        body = b'{"model":"m","n":' + too_long + b"}"
        assert _expected(body) == "invalid"
        with pytest.raises(ApiError) as caught:
            read_call_options(body, parse_whole_below=whole_below)
        assert caught.value.status == 400
    # A float has no such limit, in json.loads nor here.
    floating = b'{"model":"m","n":' + b"7" * 5000 + b".5}"
    assert read_call_options(floating, parse_whole_below=whole_below).model == "m"


def test_the_scanners_nesting_is_bounded() -> None:
    ok = b'{"model":"m","a":' + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"}"
    assert read_call_options(ok, parse_whole_below=0).model == "m"
    # (the innermost few levels are matched whole, so the bound is not exact)
    deep = b'{"model":"m","a":' + b"[" * (MAX_DEPTH + 8) + b"]" * (MAX_DEPTH + 8) + b"}"
    with pytest.raises(ApiError):
        read_call_options(deep, parse_whole_below=0)
    # A small body is json.loads's: its own recursion limit (near 1000) bounds it.
    deeper = b'{"model":"m","a":' + b"[" * 5000 + b"]" * 5000 + b"}"
    with pytest.raises(ApiError):
        read_call_options(deeper)


@READERS
def test_non_utf8_encodings_are_refused(whole_below: int) -> None:
    body = '{"model":"m"}'
    for encoded in (
        b"\xef\xbb\xbf" + body.encode(),
        body.encode("utf-16"),
        b'{"model":"\xed\xa0\x80"}',
    ):
        if whole_below == 0:
            with pytest.raises(NotJson):
                scan_top_level(encoded, NAMES)
        with pytest.raises(ApiError) as caught:
            read_call_options(encoded, parse_whole_below=whole_below)
        assert caught.value.status == 400


def test_containers_are_not_built() -> None:
    top = scan_top_level(b'{"model":{"a":[1,2]},"stream":[true]}', NAMES)
    assert top.members == {"model": ..., "stream": ...}
    assert read_call_options(b'{"model":"m","stream":[true]}').stream is False


def test_a_scan_out_of_time_is_refused_and_an_ordinary_big_body_is_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Very many tiny nested containers: the scan's cost, not the body's size, is what grows.
    nested = b'{"model":"m","x":[' + b",".join([b"[[[[[0]]]]]"] * 10_000) + b"]}"
    assert scan_top_level(nested, NAMES, budget_seconds=60).members == {"model": "m"}
    with pytest.raises(TooComplex):
        scan_top_level(nested, NAMES, budget_seconds=0.0)
    many_members = (
        b"{" + b",".join(b'"k%d":[[[[[0]]]]]' % n for n in range(5000)) + b',"model":"m"}'
    )
    with pytest.raises(TooComplex):
        scan_top_level(many_members, NAMES, budget_seconds=0.0)
    # Out of budget is a 413 naming the cause (the budget itself is set to nothing here).
    monkeypatch.setattr(call_options, "scan_budget_seconds", lambda size: 0.0)
    with pytest.raises(ApiError) as caught:
        read_call_options(nested, parse_whole_below=0)
    assert caught.value.status == 413
    assert "nested values" in caught.value.message
    monkeypatch.undo()
    chat = json.dumps(
        {"model": "m", "messages": [{"role": "user", "content": "hello " * 200}] * 2000}
    ).encode()
    assert len(chat) > PARSE_WHOLE_BELOW
    assert read_call_options(chat).model == "m"
    assert scan_budget_seconds(32 << 20) == pytest.approx(4.2)


async def test_one_user_holds_at_most_two_large_bodies_in_the_scan_lane() -> None:
    release = threading.Event()
    real = call_options.read_call_options

    def blocked(body: bytes, **kwargs: Any) -> CallOptions:
        release.wait(10)
        return real(body, **kwargs)

    big = b'{"model":"m","pad":"' + b"x" * PARSE_WHOLE_BELOW + b'"}'
    call_options.read_call_options = blocked
    try:
        first = asyncio.ensure_future(call_options.read_call_options_off_loop(big, "mallory"))
        second = asyncio.ensure_future(call_options.read_call_options_off_loop(big, "mallory"))
        await asyncio.sleep(0.05)
        with pytest.raises(ApiError) as caught:
            await call_options.read_call_options_off_loop(big, "mallory")
        assert caught.value.status == 429
        assert caught.value.headers["Retry-After"] == "1"
        # Another user is not refused (it waits its turn in the lane).
        other = asyncio.ensure_future(call_options.read_call_options_off_loop(big, "alice"))
        release.set()
        assert [o.model for o in await asyncio.gather(first, second, other)] == ["m"] * 3
    finally:
        call_options.read_call_options = real
    # Every slot was given back.
    assert (await call_options.read_call_options_off_loop(big, "mallory")).model == "m"
    assert call_options._SCAN_SLOTS.in_flight("mallory") == 0
