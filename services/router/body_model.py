"""Rewriting the top-level `model` of a JSON body without touching any other byte.

When a client names `provider/model`, the upstream must see `model` without the prefix, but the
body is otherwise forwarded byte for byte: re-encoding it would reorder keys, change number
formats and escapes, and break any signature or cache key computed over the bytes. So the body
is scanned (not rebuilt) for the members of the top-level object, and only the bytes of the
string value of each `model` member are replaced. Pure, no I/O.
"""

from __future__ import annotations

import json

_WHITESPACE = " \t\n\r"
_decoder = json.JSONDecoder()
_scanstring = json.decoder.scanstring  # type: ignore[attr-defined]


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in _WHITESPACE:
        i += 1
    return i


def _model_value_spans(text: str) -> list[tuple[int, int]] | None:
    """Character spans of the string values of top-level `model` members, or None if `text`
    is not a JSON object."""
    i = _skip_ws(text, 0)
    if i >= len(text) or text[i] != "{":
        return None
    spans: list[tuple[int, int]] = []
    i = _skip_ws(text, i + 1)
    if i < len(text) and text[i] == "}":
        return spans if _skip_ws(text, i + 1) == len(text) else None
    while True:
        if i >= len(text) or text[i] != '"':
            return None
        key, i = _scanstring(text, i + 1, True)
        i = _skip_ws(text, i)
        if i >= len(text) or text[i] != ":":
            return None
        start = _skip_ws(text, i + 1)
        value, end = _decoder.raw_decode(text, start)
        if key == "model" and isinstance(value, str):
            spans.append((start, end))
        i = _skip_ws(text, end)
        if i < len(text) and text[i] == ",":
            i = _skip_ws(text, i + 1)
            continue
        if i < len(text) and text[i] == "}":
            return spans if _skip_ws(text, i + 1) == len(text) else None
        return None


def rewrite_model(body: bytes, model: str) -> bytes:
    """`body` with the value of every top-level `model` string member set to `model`.

    A body that is not a JSON object (or not valid JSON, or without a top-level `model` string)
    is returned unchanged.
    """
    try:
        text = body.decode("utf-8")
        spans = _model_value_spans(text)
    except (UnicodeDecodeError, ValueError):
        return body
    if not spans:
        return body
    replacement = json.dumps(model).encode("utf-8")
    out = bytearray()
    last = 0
    for start, end in spans:
        # Byte offsets of character offsets: the UTF-8 length of the text before them.
        byte_start = len(text[:start].encode("utf-8"))
        byte_end = byte_start + len(text[start:end].encode("utf-8"))
        out += body[last:byte_start] + replacement
        last = byte_end
    out += body[last:]
    return bytes(out)
