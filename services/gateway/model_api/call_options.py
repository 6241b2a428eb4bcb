"""What the gateway reads of a model call's body: `model` and `stream` (`CallOptions`).

The gateway never re-encodes a request body: it parses a copy only to read the top-level
`model` and `stream`, and forwards the original bytes. Choosing the provider from `model`
(SPEC 2.6: `provider/model` picks that provider, otherwise the provider listing the model) is the
vault's `Resolve`, reached through the router; the router rewrites `model` when it strips a
prefix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from services.gateway.errors import ApiError


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
        payload: Any = json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ApiError(400, "invalid_argument", "the request body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise ApiError(400, "invalid_argument", "the request body must be a JSON object")
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(
            400, "invalid_argument", "the request body must name a `model` (a non-empty string)"
        )
    return CallOptions(model=model, stream=payload.get("stream") is True)
