"""What the gateway reads of a model call's body: `model` and `stream` (`CallOptions`).

The gateway never re-encodes a request body, nor builds it: `body_fields.scan_top_level`
validates it as JSON and decodes only the top-level `model` and `stream` (SPEC 3.5), and the
original bytes are forwarded. Choosing the provider from `model` (SPEC 2.6: `provider/model`
picks that provider, otherwise the provider listing the model) is the vault's `Resolve`, reached
through the router; the router rewrites `model` when it strips a prefix.
"""

from __future__ import annotations

from dataclasses import dataclass

import anyio

from services.gateway.errors import ApiError
from services.gateway.model_api.body_fields import NotJson, scan_top_level

_FIELDS = ("model", "stream")


@dataclass(frozen=True)
class CallOptions:
    """The two body fields the gateway reads."""

    model: str
    stream: bool


def read_call_options(body: bytes) -> CallOptions:
    """Read `model` and `stream` from a JSON request body.

    Raises:
        ApiError: 400 when the body is not a JSON object or names no model.
    """
    try:
        top = scan_top_level(body, _FIELDS) if body else None
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


#: Bodies from this size on are scanned in a worker thread, so that a large or deeply nested
#: body does not hold up the event loop (and every other request) while it is read.
OFF_LOOP_SIZE = 256 * 1024


async def read_call_options_off_loop(body: bytes) -> CallOptions:
    """`read_call_options`, in a worker thread when the body is large."""
    if len(body) < OFF_LOOP_SIZE:
        return read_call_options(body)
    return await anyio.to_thread.run_sync(read_call_options, body)
