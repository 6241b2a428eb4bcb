"""Reading the top-level `model` and `stream` of a JSON body without building the rest of it.

A model call's body may be 32 MiB; `json.loads` of one made of small objects peaks at several
hundred MiB. `scan_top_level` walks the bytes instead: it validates the whole body as JSON, but
materialises only the values of the top-level members it is asked for, and skips every other
value with regular expressions (which match in C, on the bytes, without copying them). Memory is
the body plus a stack of one byte per nesting level. Pure, no I/O.

Its answers are `json.loads`'s for every body `json.loads` accepts, with these deliberate
exceptions (each refused, i.e. "not JSON"):

- the body must be UTF-8 without a byte-order mark (RFC 8259 8.1); `json.loads` of bytes would
  also guess UTF-16/32, skip a UTF-8 BOM and let encoded surrogates through;
- nesting deeper than `MAX_DEPTH` levels (`json.loads` stops near 1000 with a RecursionError).

Like `json.loads` it takes `NaN`, `Infinity` and `-Infinity`, refuses an integer literal of more
digits than `sys.get_int_max_str_digits()`, and a member repeated in an object counts by its
last occurrence.
"""

from __future__ import annotations

import codecs
import json
import re
import sys
import time
from collections.abc import Collection
from dataclasses import dataclass

#: Deepest nesting accepted; far beyond any request schema, well inside json.loads's own limit.
MAX_DEPTH = 512
#: Most repetitions one run-matching regex consumes in one call (bounds the regex engine's
#: own bookkeeping; a longer run is continued by the next call).
_RUN = 4096
_UTF8_CHUNK = 1024 * 1024


class NotJson(ValueError):
    """The body is not JSON (as this module reads it)."""


class TooComplex(ValueError):
    """The scan ran out of its time budget: a body of very many small nested containers."""


class _Budget:
    """A scan's time budget, looked at once every `_CHECK_EVERY` steps (cheap)."""

    def __init__(self, seconds: float | None) -> None:
        self._deadline = None if seconds is None else time.monotonic() + seconds
        self._steps = 0

    def step(self) -> None:
        if self._deadline is None:
            return
        self._steps += 1
        if self._steps % _CHECK_EVERY == 0 and time.monotonic() > self._deadline:
            raise TooComplex("the request body has too many nested values to read in time")


_CHECK_EVERY = 1024


@dataclass(frozen=True)
class TopLevel:
    """The outcome of a scan: whether the body is a JSON object, and the chosen members.

    `members` maps each requested name that occurs at the top level to its value, decoded as
    `json.loads` would, except that a container value is given as `...` (not built).
    """

    is_object: bool
    members: dict[str, object]


def _escaped_word(word: str) -> bytes:
    """A regex matching every JSON spelling of the string `word` (letters only)."""
    parts = []
    for char in word:
        code = f"{ord(char):04x}"
        hex_alternatives = "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in code)
        parts.append(f"(?:{char}|\\\\u{hex_alternatives})")
    return ('"' + "".join(parts) + '"').encode()


_WS = rb"[ \t\n\r]*+"
_STRING = rb'"(?:[^"\\\x00-\x1f]++|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*+"'
_MAX_DIGITS = sys.get_int_max_str_digits()
_INT_DIGITS = rb"[0-9]*+" if _MAX_DIGITS == 0 else rb"[0-9]{0,%d}+(?![0-9])" % (_MAX_DIGITS - 1)
_NUMBER = (
    # a fraction or an exponent makes a float, whose length json.loads does not limit
    rb"-?+(?:0|[1-9][0-9]*+)(?:\.[0-9]++(?:[eE][-+]?+[0-9]++)?+|[eE][-+]?+[0-9]++)"
    # an integer: as long as int() accepts
    rb"|-?+(?:0(?![0-9])|[1-9]" + _INT_DIGITS + rb")(?![.eE])"
)
_SCALAR = rb"(?:" + _STRING + rb"|true|false|null|NaN|Infinity|-Infinity|" + _NUMBER + rb")"


def _containers_of(item: bytes) -> bytes:
    """A value that is `item`, or an object or array whose members are `item`s."""
    member = _STRING + _WS + rb":" + _WS + item + _WS
    element = item + _WS
    flat_object = rb"\{" + _WS + rb"(?:" + member + rb"(?:," + _WS + member + rb")*+)?+\}"
    flat_array = rb"\[" + _WS + rb"(?:" + element + rb"(?:," + _WS + element + rb")*+)?+\]"
    return rb"(?:" + _SCALAR + rb"|" + flat_object + rb"|" + flat_array + rb")"


#: A value nested at most three containers deep: most of a request body, in one match.
_FLAT = _containers_of(_containers_of(_containers_of(_SCALAR)))

_ws = re.compile(_WS)
_string = re.compile(_STRING)
_flat = re.compile(_FLAT)
#: Further `, value` after an array element.
_array_run = re.compile(rb"(?:" + _WS + rb"," + _WS + _FLAT + rb"){0,%d}+" % _RUN)
#: Further `, "key": value` after an object member, in an object whose keys do not matter.
_object_run = re.compile(
    rb"(?:" + _WS + rb"," + _WS + _STRING + _WS + rb":" + _WS + _FLAT + rb"){0,%d}+" % _RUN
)


def scan_top_level(
    body: bytes, names: Collection[str], *, budget_seconds: float | None = None
) -> TopLevel:
    """Validate `body` as JSON and read the top-level members called `names`.

    Raises:
        NotJson: the body is not JSON (see the module docstring for what that means here).
        TooComplex: `budget_seconds` ran out first (ordinary bodies take a small fraction of
            it: the scan's cost grows with the number of nested containers, not bytes).
    """
    budget = _Budget(budget_seconds)
    _check_utf8(body)
    start = _ws.match(body, 0).end()  # type: ignore[union-attr]
    if body[start : start + 1] != b"{":
        end = _skip_value(body, start, budget)
        if _ws.match(body, end).end() != len(body):  # type: ignore[union-attr]
            raise NotJson("extra data after the JSON value")
        return TopLevel(False, {})
    wanted = re.compile(b"|".join(_escaped_word(name) for name in names) or b"(?!)")
    # A top-level member whose key is none of `names`, and its value: skipped in bulk.
    other_run = re.compile(
        rb"(?:" + _WS + rb"," + _WS + rb"(?!(?:" + wanted.pattern + rb")" + _WS + rb":)"
        + _STRING + _WS + rb":" + _WS + _FLAT + rb"){0,%d}+" % _RUN
    )  # fmt: skip
    members: dict[str, object] = {}
    i = _ws.match(body, start + 1).end()  # type: ignore[union-attr]
    if body[i : i + 1] == b"}":
        i += 1
    else:
        i = _read_member(body, i, wanted, members, budget)
        while True:
            budget.step()
            i = other_run.match(body, i).end()  # type: ignore[union-attr]
            i = _ws.match(body, i).end()  # type: ignore[union-attr]
            separator = body[i : i + 1]
            if separator == b"}":
                i += 1
                break
            if separator != b",":
                raise NotJson("expected ',' or '}' after an object member")
            i = _read_member(body, _ws.match(body, i + 1).end(), wanted, members, budget)  # type: ignore[union-attr]
    if _ws.match(body, i).end() != len(body):  # type: ignore[union-attr]
        raise NotJson("extra data after the JSON value")
    return TopLevel(True, members)


def _read_member(
    body: bytes, i: int, wanted: re.Pattern[bytes], members: dict[str, object], budget: _Budget
) -> int:
    """Read one `"key": value` of the top-level object at `i`; return where it ends."""
    key = _string.match(body, i)
    if key is None:
        raise NotJson("expected a string key")
    colon = _ws.match(body, key.end()).end()  # type: ignore[union-attr]
    if body[colon : colon + 1] != b":":
        raise NotJson("expected ':' after a key")
    value_start = _ws.match(body, colon + 1).end()  # type: ignore[union-attr]
    end = _skip_value(body, value_start, budget)
    if wanted.fullmatch(body, key.start(), key.end()):
        name = json.loads(body[key.start() : key.end()].decode())
        raw = body[value_start:end]
        members[name] = ... if raw[:1] in (b"{", b"[") else json.loads(raw.decode())
    return end


def _skip_value(body: bytes, i: int, budget: _Budget) -> int:
    """Validate the JSON value at `i` without building it; return where it ends."""
    flat = _flat.match(body, i)
    if flat is not None:
        return flat.end()
    opening = body[i : i + 1]
    if opening not in (b"{", b"["):
        raise NotJson("expected a JSON value")
    # The open containers, innermost last: ord("{") or ord("[").
    stack = bytearray(opening)
    i += 1
    # Just after an opening bracket: an item or the closing bracket may follow.
    after_opening = True
    while stack:
        budget.step()
        i = _ws.match(body, i).end()  # type: ignore[union-attr]
        is_object = stack[-1] == ord("{")
        closing = b"}" if is_object else b"]"
        if after_opening and body[i : i + 1] != closing:
            i, after_opening = _item(body, i, is_object, stack)
            continue
        if not after_opening:
            # After an item: a run of further flat items in one match, then ',' or closing.
            run = _object_run if is_object else _array_run
            i = _ws.match(body, run.match(body, i).end()).end()  # type: ignore[union-attr]
            if body[i : i + 1] == b",":
                i = _ws.match(body, i + 1).end()  # type: ignore[union-attr]
                i, after_opening = _item(body, i, is_object, stack)
                continue
            if body[i : i + 1] != closing:
                raise NotJson("expected ',' or a closing bracket")
        stack.pop()
        i += 1
        after_opening = False
    return i


def _item(body: bytes, i: int, is_object: bool, stack: bytearray) -> tuple[int, bool]:
    """One array element or object member at `i`: a flat value is consumed whole, a deeper
    container is opened (pushed on `stack`). Returns the position after what was read and
    whether a container was opened."""
    if is_object:
        key = _string.match(body, i)
        if key is None:
            raise NotJson("expected a string key")
        i = _ws.match(body, key.end()).end()  # type: ignore[union-attr]
        if body[i : i + 1] != b":":
            raise NotJson("expected ':' after a key")
        i = _ws.match(body, i + 1).end()  # type: ignore[union-attr]
    flat = _flat.match(body, i)
    if flat is not None:
        return flat.end(), False
    opening = body[i : i + 1]
    if opening not in (b"{", b"["):
        raise NotJson("expected a JSON value")
    if len(stack) >= MAX_DEPTH:
        raise NotJson("nested too deeply")
    stack += opening
    return i + 1, True


def _check_utf8(body: bytes) -> None:
    if body.startswith(codecs.BOM_UTF8):
        raise NotJson("a JSON body must not start with a byte-order mark")
    if body.isascii():
        return
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    view = memoryview(body)
    try:
        for offset in range(0, len(body), _UTF8_CHUNK):
            decoder.decode(view[offset : offset + _UTF8_CHUNK])
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise NotJson("the body is not UTF-8") from None
