"""The model endpoints as the gateway's `PlainEndpoint` table: routes and OpenAPI in one place.

    GET  /v1/models                  ModelCatalog.list_models   (both vendors' list shapes)
    GET  /v1/models/{model_id}       ModelCatalog.retrieve_model
    POST /v1/chat/completions        model call, OPENAI
    POST /v1/embeddings              model call, OPENAI
    POST /v1/messages                model call, ANTHROPIC
    ANY  /v1/messages/{path}         model call, ANTHROPIC      (count_tokens, batches, ...)
    ANY  /v1/{path}                  model call, OPENAI         (every other OpenAI path)

Starlette takes the first route whose path *and* method match, so the order matters: the
catch-all `/v1/{path}` is last, and e.g. `DELETE /v1/models/ft:...` (OpenAI's delete of a
fine-tuned model) passes through it, since `/v1/models/{model_id}` is GET only. `ANY` is
`PASS_THROUGH_METHODS`, each documented as an operation of its own.
"""

from __future__ import annotations

from typing import Any

from services.gateway.endpoint_table import ErrorRenderer, PlainEndpoint, PlainHandler
from services.gateway.model_api.model_call import ANTHROPIC, OPENAI, LlmBackend, model_call
from services.gateway.model_api.model_catalog import ModelCatalog, catalog_errors

TAG = "models"
PASS_THROUGH_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
# Slash-separated segments of URL-safe characters, none empty, `.` or `..` (the router refuses
# those): what the vendors' paths and model ids look like (`fine_tuning/jobs`, `ft:gpt-4o:x`).
_SEGMENTS = r"^[A-Za-z0-9_~][A-Za-z0-9_.:~-]*(/[A-Za-z0-9_~][A-Za-z0-9_.:~-]*)*$"
_REST_OF_PATH: dict[str, Any] = {
    "type": "string",
    "pattern": _SEGMENTS,
    "description": "the rest of the path, sent to the provider as the vendor's SDK would",
    "examples": ["responses", "images/generations", "batches"],
}
_MODEL_ID: dict[str, Any] = {
    "type": "string",
    "pattern": _SEGMENTS,
    "description": "a model a provider lists, or provider_name/model",
    "examples": ["gpt-4", "openai/gpt-4"],
}


# -- OpenAPI fragments ---------------------------------------------------------------------------

_OPENAI_ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
_ANTHROPIC_ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["type", "error"],
    "properties": {
        "type": {"const": "error"},
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
        },
    },
}
_MODEL_CALL_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["model"],
                "properties": {
                    "model": {
                        "type": "string",
                        "minLength": 1,
                        "description": "a model a provider lists, or provider_name/model",
                        "examples": ["gpt-4", "openai/gpt-4", "claude-3.5-sonnet"],
                    },
                    "stream": {"type": "boolean", "description": "true: answer as SSE"},
                },
                "description": "forwarded to the provider byte for byte",
            }
        }
    },
}
# One server-sent event (each `data` is a JSON chunk in the vendor's shape, or `[DONE]`).
_SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "properties": {"event": {"type": "string"}, "data": {"type": "string"}},
}
_HEADERS: dict[str, Any] = {
    name: {"description": text, "schema": {"type": "string"}}
    for name, text in {
        "X-RateLimit-Limit": "bucket size (burst)",
        "X-RateLimit-Remaining": "requests left in the bucket",
        "X-RateLimit-Reset": "seconds until the bucket is full again",
        "X-Credential-Warning": "a placeholder warning (key names only); one header each",
    }.items()
}
_ERRORS: dict[int, str] = {
    400: "invalid_argument: the body is not a JSON object naming a model",
    401: "unauthorized: no, malformed, unknown, revoked or expired token",
    403: "forbidden: the token lacks llm:invoke; or the upstream's address is refused",
    404: "model_not_found: no provider serves the model",
    413: "payload_too_large: the body is over GATEWAY_LLM_MAX_BODY (32 MiB by default)",
    424: "credential_not_found or credential_not_allowed: a referenced credential is missing or"
    " bound to other hosts (on_missing_credential=error)",
    429: "rate_limited: see Retry-After",
    500: "internal: an unexpected failure",
    502: "upstream_unavailable: the provider could not be reached",
    503: "unavailable: the vault or the router is unreachable",
    504: "upstream_timeout: the provider did not answer in time",
}


def _responses(error_schema: dict[str, Any], success: dict[str, Any]) -> dict[str, Any]:
    content = {"application/json": {"schema": error_schema}}
    responses: dict[str, Any] = {"200": success}
    for status, text in _ERRORS.items():
        responses[str(status)] = {"description": text, "content": content}
    responses["default"] = {
        "description": "the provider's own answer (status and body passed through)",
        "content": {"*/*": {"schema": {}}},
    }
    return responses


def _model_call_success(stream_doc: str) -> dict[str, Any]:
    return {
        "description": f"the provider's answer, relayed as it arrives; {stream_doc}",
        "headers": _HEADERS,
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "text/event-stream": {"schema": _SSE_EVENT},
        },
    }


_MODEL: dict[str, Any] = {
    "description": "the model (Anthropic's shape when the request carries anthropic-version)",
    "headers": _HEADERS,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["id"],
                "properties": {"id": {"type": "string"}},
            }
        }
    },
}
_MODEL_LIST: dict[str, Any] = {
    "description": "the models of all the user's providers (Anthropic's shape when the request "
    "carries anthropic-version)",
    "headers": _HEADERS,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["data"],
                "properties": {
                    "object": {"const": "list"},
                    "data": {"type": "array", "items": {"type": "object"}},
                },
            }
        }
    },
}


def _call(
    path: str,
    handler: PlainHandler,
    summary: str,
    responses: dict[str, Any],
    render_error: ErrorRenderer,
) -> PlainEndpoint:
    """A `POST` model call at a literal path."""
    return PlainEndpoint(
        "POST",
        path,
        handler,
        summary,
        TAG,
        responses,
        security=True,
        request_body=_MODEL_CALL_BODY,
        render_error=render_error,
    )


def _pass_through(
    path: str,
    handler: PlainHandler,
    summary: str,
    responses: dict[str, Any],
    render_error: ErrorRenderer,
) -> PlainEndpoint:
    """Model calls at every path under `path`'s prefix, by every method of the vendors' APIs."""
    return PlainEndpoint(
        PASS_THROUGH_METHODS[0],
        path,
        handler,
        summary,
        TAG,
        responses,
        security=True,
        request_body=_MODEL_CALL_BODY,
        path_params={"path": _REST_OF_PATH},
        other_methods=PASS_THROUGH_METHODS[1:],
        render_error=render_error,
    )


def model_endpoints(backend: LlmBackend) -> list[PlainEndpoint]:
    """The model endpoints, most specific first; the pass-through catches every other `/v1/*`."""
    catalog = ModelCatalog(backend)
    openai_call = model_call(backend, OPENAI)
    anthropic_call = model_call(backend, ANTHROPIC)
    openai_responses = _responses(_OPENAI_ERROR, _model_call_success('"stream": true gives SSE'))
    anthropic_responses = _responses(
        _ANTHROPIC_ERROR, _model_call_success("stream true gives Anthropic events")
    )
    return [
        PlainEndpoint(
            "GET",
            "/v1/models",
            catalog.list_models,
            "List the models of all the user's providers (OpenAI and Anthropic SDKs)",
            TAG,
            _responses(_OPENAI_ERROR, _MODEL_LIST),
            security=True,
            render_error=catalog_errors,
        ),
        PlainEndpoint(
            "GET",
            "/v1/models/{model_id:path}",
            catalog.retrieve_model,
            "One model of the user's providers (OpenAI and Anthropic SDKs)",
            TAG,
            _responses(_OPENAI_ERROR, _MODEL),
            security=True,
            path_params={"model_id": _MODEL_ID},
            render_error=catalog_errors,
        ),
        _call(
            "/v1/chat/completions",
            openai_call,
            "OpenAI chat completions, passed through to the provider serving the model",
            openai_responses,
            OPENAI.route_errors,
        ),
        _call(
            "/v1/embeddings",
            openai_call,
            "OpenAI embeddings, passed through to the provider serving the model",
            openai_responses,
            OPENAI.route_errors,
        ),
        _call(
            "/v1/messages",
            anthropic_call,
            "Anthropic Messages, passed through to the provider serving the model",
            anthropic_responses,
            ANTHROPIC.route_errors,
        ),
        _pass_through(
            "/v1/messages/{path:path}",
            anthropic_call,
            "Anthropic Messages sub-resources (count_tokens, batches, ...), passed through to "
            "the provider serving the body's model",
            anthropic_responses,
            ANTHROPIC.route_errors,
        ),
        _pass_through(
            "/v1/{path:path}",
            openai_call,
            "Any other OpenAI API call (/v1/responses, /v1/images/generations, ...), passed "
            "through to the provider serving the body's model",
            openai_responses,
            OPENAI.route_errors,
        ),
    ]
