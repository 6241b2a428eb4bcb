"""What the gateway reads of a model call's body: `model` and `stream` (`CallOptions`).

The gateway never re-encodes a request body, and never builds a large one (SPEC 3.5): a body
below `PARSE_WHOLE_BELOW` is parsed by `json.loads` (C, microseconds; its peak memory, a few
times the body, is small at that size), a larger one is read by `body_fields.scan_top_level`,
which validates it and decodes only the top-level `model` and `stream`, in one worker thread
shared by every call (Python-speed scanning of a big body costs CPU; one lane bounds it to one
core however many arrive, and the event loop keeps serving everything else). So that no user
can hold that lane, a scan has a time budget that grows with the body's size (an ordinary body
uses a small fraction of it; one of millions of tiny nested containers is refused with 413), and
each user has at most `SCANS_PER_USER` bodies in the lane at once (429 beyond). The original
bytes are forwarded. Choosing the provider from `model` (SPEC 2.6: `provider/model`
picks that provider, otherwise the provider listing the model) is the vault's `Resolve`, reached
through the router; the router rewrites `model` when it strips a prefix.
"""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from services.gateway.call_slots import CallSlots
from services.gateway.errors import ApiError
from services.gateway.model_api.body_fields import NotJson, TooComplex, TopLevel, scan_top_level

_FIELDS = ("model", "stream")

#: Bodies below this size are parsed whole by `json.loads`; from this size on they are scanned
#: (`body_fields`) off the event loop. A chat request is usually a few KiB.
PARSE_WHOLE_BELOW = 256 * 1024

#: The one lane large bodies are scanned in (see the module docstring).
_SCAN_LANE = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aicreds-body-scan")
#: Large bodies one user may have in the lane (scanning or waiting) at once.
SCANS_PER_USER = 2
_SCAN_SLOTS = CallSlots(SCANS_PER_USER)


def scan_budget_seconds(size: int) -> float:
    """A scan's time budget: 1 s plus 0.1 s per MiB. A 32 MiB body of chat messages scans in
    about 0.4 s on a busy shared core; 32 MiB of `[[[[[0]]]]]` would take 25 s unbounded."""
    return 1.0 + 0.1 * size / (1 << 20)


@dataclass(frozen=True)
class CallOptions:
    """The two body fields the gateway reads."""

    model: str
    stream: bool


def _parsed_top_level(body: bytes) -> TopLevel:
    """`json.loads`'s reading of a small body, in `scan_top_level`'s terms: strict UTF-8 (no
    byte-order mark, no encoded surrogates), as the scanner requires."""
    try:
        value = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise NotJson from None
    if not isinstance(value, dict):
        return TopLevel(is_object=False, members={})
    return TopLevel(is_object=True, members={k: value[k] for k in _FIELDS if k in value})


def read_call_options(body: bytes, *, parse_whole_below: int = PARSE_WHOLE_BELOW) -> CallOptions:
    """Read `model` and `stream` from a JSON request body.

    Raises:
        ApiError: 400 when the body is not a JSON object or names no model.
    """
    try:
        if not body:
            top = None
        elif len(body) < parse_whole_below:
            top = _parsed_top_level(body)
        else:
            top = scan_top_level(body, _FIELDS, budget_seconds=scan_budget_seconds(len(body)))
    except TooComplex as err:
        raise ApiError(413, "payload_too_large", f"{err}; send fewer nested values") from None
    except NotJson:
        raise ApiError(400, "invalid_argument", "the request body is not valid JSON") from None
    if top is None or not top.is_object:
        raise ApiError(400, "invalid_argument", "the request body must be a JSON object")
    model = top.members.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(
            400, "invalid_argument", "the request body must name a `model` (a non-empty string)"
        )
    return CallOptions(model=model, stream=top.members.get("stream") is True)


async def read_call_options_off_loop(body: bytes, user_id: str) -> CallOptions:
    """`read_call_options`; a large body is scanned in the one scanning lane.

    Raises:
        ApiError: 429 when the user already has `SCANS_PER_USER` large bodies in the lane.
    """
    if len(body) < PARSE_WHOLE_BELOW:
        return read_call_options(body)
    slot = _SCAN_SLOTS.acquire(user_id)
    if slot is None:
        raise ApiError(
            429,
            "rate_limited",
            f"at most {SCANS_PER_USER} large request bodies are read at once per user",
            headers={"Retry-After": "1"},
        )
    try:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(_SCAN_LANE, read_call_options, body)
    finally:
        slot.release()
