"""Errors of the model endpoints, in each vendor's own shape.

The model endpoints raise and map the gateway's own `ApiError` (status, REST code, public
message, headers) — gRPC statuses become HTTP statuses in the gateway's one place,
`services.gateway.errors.from_rpc_error` — and only the *body* differs per vendor:

    openai_error_response     {"error": {"message", "type", "param", "code"}}
    anthropic_error_response  {"type": "error", "error": {"type", "message"}}

and so does the event that ends a stream which broke after it started
(`openai_stream_error_event`, `anthropic_stream_error_event`).

`code` is the REST code (`unauthorized`, `model_not_found`, `credential_not_found`, ...); the
status decides which exception the official SDK raises: 401 AuthenticationError, 403
PermissionDeniedError, 404 NotFoundError, 429 RateLimitError, 5xx InternalServerError
(anthropic: ServiceUnavailableError for 503, GatewayTimeoutError for 504), any other status
APIStatusError. The message is public: it may name a key, a model or a provider, never a value.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from starlette.responses import JSONResponse

from services.gateway.errors import ApiError

_OPENAI_TYPE_BY_STATUS: Mapping[int, str] = {
    401: "authentication_error",
    403: "permission_error",
    429: "rate_limit_error",
}

_ANTHROPIC_TYPE_BY_STATUS: Mapping[int, str] = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def openai_type(error: ApiError) -> str:
    default = "server_error" if error.status >= 500 else "invalid_request_error"
    return _OPENAI_TYPE_BY_STATUS.get(error.status, default)


def anthropic_type(error: ApiError) -> str:
    default = "api_error" if error.status >= 500 else "invalid_request_error"
    return _ANTHROPIC_TYPE_BY_STATUS.get(error.status, default)


def openai_error_body(error: ApiError) -> dict[str, object]:
    return {
        "error": {
            "message": error.message,
            "type": openai_type(error),
            "param": None,
            "code": error.code,
        }
    }


def anthropic_error_body(error: ApiError) -> dict[str, object]:
    return {"type": "error", "error": {"type": anthropic_type(error), "message": error.message}}


def openai_stream_error_event(error: ApiError) -> bytes:
    """An SSE event the openai SDK raises `APIError` for, ending a broken stream."""
    return f"data: {json.dumps(openai_error_body(error))}\n\n".encode()


def anthropic_stream_error_event(error: ApiError) -> bytes:
    """The `error` event Anthropic sends when a stream fails after it started (the anthropic
    SDK raises it as an `APIStatusError`)."""
    return f"event: error\ndata: {json.dumps(anthropic_error_body(error))}\n\n".encode()


def openai_error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(openai_error_body(error), status_code=error.status, headers=error.headers)


def anthropic_error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(
        anthropic_error_body(error), status_code=error.status, headers=error.headers
    )
