"""HTTP errors of the gateway, and the one place where gRPC statuses become HTTP statuses.

    ApiError(status, code, message)      an error response; rest_error_response renders it as
                                         {"error": {"code", "message"}} (REST v2)
    ├── raised by the gateway itself     401 unauthorized, 403 forbidden, 413, 429, 400 ...
    └── from_rpc_error(...)              a vault or router status, mapped by HTTP_STATUS_BY_GRPC
                                         (refined by HTTP_STATUS_BY_REASON)

The table follows grpc-gateway (STYLE.md). The REST `code` is the `x-error-reason` trailing
metadata the backend sends (`credential_not_found`, `provider_exists`, ..., read by
`services.common.error_reason`) and otherwise a default per status. The message of a backend
status is public by contract (it names keys, never values) and is passed on for client
errors; server-side failures get a fixed text,
except for the reasons of HTTP_STATUS_BY_REASON: there the backend answered, the failure lay
behind it, and its message says which part (SPEC 3.3 point 5). REST v2 and the model endpoints
both map through here; the model endpoints only render the result in their vendor's shape.

A backend that refuses the *gateway itself* (UNAUTHENTICATED or PERMISSION_DENIED with no
reason: a wrong or unprivileged caller token) is an operator problem, not the client's: it
becomes 500 and an error log line, never a 401/403 that would blame the client's token.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import grpc
import grpc.aio
from starlette.responses import JSONResponse

from services.common.error_reason import error_reason

HTTP_STATUS_BY_GRPC: Mapping[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    # SPEC 3.2: a missing credential with on_missing_credential=error is HTTP 424.
    grpc.StatusCode.FAILED_PRECONDITION: 424,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}

DEFAULT_CODE_BY_GRPC: Mapping[grpc.StatusCode, str] = {
    grpc.StatusCode.CANCELLED: "cancelled",
    grpc.StatusCode.INVALID_ARGUMENT: "invalid_argument",
    grpc.StatusCode.DEADLINE_EXCEEDED: "deadline_exceeded",
    grpc.StatusCode.NOT_FOUND: "not_found",
    grpc.StatusCode.ALREADY_EXISTS: "already_exists",
    grpc.StatusCode.PERMISSION_DENIED: "forbidden",
    grpc.StatusCode.UNAUTHENTICATED: "unauthorized",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "rate_limited",
    grpc.StatusCode.FAILED_PRECONDITION: "failed_precondition",
    grpc.StatusCode.ABORTED: "conflict",
    grpc.StatusCode.OUT_OF_RANGE: "invalid_argument",
    grpc.StatusCode.UNIMPLEMENTED: "not_implemented",
    grpc.StatusCode.UNAVAILABLE: "unavailable",
}

#: Reasons whose HTTP status is more precise than their gRPC code's (SPEC 3.3 point 5): the
#: router is reachable, what failed lies behind it (the upstream, or the vault), and its public
#: message says which. Without a reason, UNAVAILABLE means the backend itself is down (503).
HTTP_STATUS_BY_REASON: Mapping[str, int] = {
    "upstream_unavailable": 502,
    "upstream_timeout": 504,
    "vault_unavailable": 503,
}

# Statuses whose backend message is not meant for the client.
_FIXED_MESSAGES: Mapping[grpc.StatusCode, str] = {
    grpc.StatusCode.UNKNOWN: "internal error",
    grpc.StatusCode.INTERNAL: "internal error",
    grpc.StatusCode.DATA_LOSS: "internal error",
    grpc.StatusCode.UNAVAILABLE: "{backend} is unavailable",
    grpc.StatusCode.DEADLINE_EXCEEDED: "{backend} did not answer in time",
    grpc.StatusCode.CANCELLED: "request cancelled",
}

_log = logging.getLogger("aicreds.gateway.errors")


class ApiError(Exception):
    """An error answered as `{"error": {"code", "message"}}` with an HTTP status.

    The message is shown to the client: it may name a key, a provider or a scope, never a value.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers: dict[str, str] = dict(headers or {})

    def __repr__(self) -> str:
        return f"ApiError(status={self.status}, code={self.code!r}, message={self.message!r})"

    def body(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}


def internal_error() -> ApiError:
    """The answer to an unexpected exception: a fixed text, never the exception's own."""
    return ApiError(500, "internal", "internal error")


def rest_error_response(error: ApiError) -> JSONResponse:
    """The REST v2 shape of an error: `{"error": {"code", "message"}}` with its headers."""
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def invalid_argument(message: str) -> ApiError:
    return ApiError(400, "invalid_argument", message)


def from_rpc_error(err: grpc.aio.AioRpcError, backend: str) -> ApiError:
    """Translate a failed backend call into the HTTP error the client sees."""
    code = err.code()
    reason = error_reason(err.trailing_metadata())
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED) and not reason:
        _log.error(
            "backend refused the gateway's caller token",
            extra={"fields": {"backend": backend, "grpc_code": code.name}},
        )
        return ApiError(500, "internal", f"the gateway is not authorized at the {backend}")
    refined = HTTP_STATUS_BY_REASON.get(reason or "")
    status = refined or HTTP_STATUS_BY_GRPC.get(code, 500)
    fixed = _FIXED_MESSAGES.get(code)
    if refined and err.details():
        message = err.details()  # names what failed behind the backend
    elif fixed is not None:
        message = fixed.format(backend=backend)
    else:
        message = err.details() or DEFAULT_CODE_BY_GRPC.get(code, "error").replace("_", " ")
    if status >= 500:
        _log.warning(
            "backend call failed",
            extra={"fields": {"backend": backend, "grpc_code": code.name, "reason": reason}},
        )
    return ApiError(status, reason or DEFAULT_CODE_BY_GRPC.get(code, "internal"), message)
