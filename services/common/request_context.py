"""Per-RPC context shared by interceptors and handlers: the caller and the request id."""

from __future__ import annotations

from contextvars import ContextVar

from services.common.callers import Caller

_caller: ContextVar[Caller | None] = ContextVar("aicreds_caller", default=None)
_request_id: ContextVar[str] = ContextVar("aicreds_request_id", default="")


def current_caller() -> Caller | None:
    """The authenticated service caller of the RPC being handled, if any."""
    return _caller.get()


def current_request_id() -> str:
    """The request id of the RPC being handled (from `x-request-id`, else generated)."""
    return _request_id.get()
