"""Thin gRPC servicers: convert the request, call the domain layer, convert the reply."""

from __future__ import annotations

from services.common.request_context import current_caller


def caller_name() -> str:
    """The authenticated caller's name (the interceptor guarantees one on every vault RPC)."""
    caller = current_caller()
    return caller.name if caller is not None else "-"
