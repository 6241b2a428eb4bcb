"""Per-RPC context shared by interceptors and handlers: the caller and the request id.

A server binds the id an RPC arrived with (`x-request-id`, else a new one); every channel from
`services.common.grpc_server.open_channel` sends the bound id on with each call it makes, so
one id follows a request through gateway, router and vault.

The JSON log formatter (`services.common.logging`) puts `current_request_id()` on every line;
an HTTP edge binds its request's id with `bind_request_id` so that its lines carry it too.
"""

from __future__ import annotations

import os
from contextvars import ContextVar, Token

from services.common.callers import Caller

REQUEST_ID_KEY = "x-request-id"
"""The metadata key (and HTTP header) carrying a request id from service to service."""

_caller: ContextVar[Caller | None] = ContextVar("aicreds_caller", default=None)
_request_id: ContextVar[str] = ContextVar("aicreds_request_id", default="")


def current_caller() -> Caller | None:
    """The authenticated service caller of the RPC being handled, if any."""
    return _caller.get()


def current_request_id() -> str:
    """The request id of the RPC being handled (from `x-request-id`, else generated)."""
    return _request_id.get()


def bind_request_id(request_id: str) -> Token[str]:
    """Make `request_id` the current one; `unbind_request_id(token)` when the request ends."""
    return _request_id.set(request_id)


def unbind_request_id(token: Token[str]) -> None:
    """Restore the request id that was current before `bind_request_id`."""
    _request_id.reset(token)


def new_request_id() -> str:
    """A random UUID 4 as 32 hex digits (what `uuid.uuid4().hex` gives, without the `UUID`)."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    return raw.hex()
