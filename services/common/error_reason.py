"""The `x-error-reason` trailing metadata: how a service tells its caller why a call failed.

A server writes the `reason` of the `AicredsError` it raised (`credential_not_found`,
`model_not_found`, ...) next to the gRPC status (`services.common.grpc_handlers`); a caller reads
it to keep the reason (the router passing a vault error on) or to pick the REST error code (the
gateway). No grpc import: metadata is a sequence of `(key, value)` pairs, as
`AioRpcError.trailing_metadata()` returns it.

Reading: the first `x-error-reason` entry; bytes are decoded as ASCII (anything else replaced);
an empty value counts as no reason, so the caller falls back to its default for the status.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

ERROR_REASON_KEY = "x-error-reason"


def reason_metadata(reason: str) -> tuple[tuple[str, str], ...]:
    """The trailing-metadata entry carrying `reason` (none for an empty reason)."""
    return ((ERROR_REASON_KEY, reason),) if reason else ()


def error_reason(metadata: Iterable[Any] | None) -> str | None:
    """The reason a failed call's trailing metadata carries, or None."""
    for item in metadata or ():
        if item[0] == ERROR_REASON_KEY:
            value = item[1]
            text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
            return text or None
    return None
