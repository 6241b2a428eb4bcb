"""The OpenAPI 3.1 document, built from the same endpoint tables that build the routes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from services.gateway.auth import SECURE_SESSION_COOKIE
from services.gateway.endpoint_table import Endpoint, PlainEndpoint
from services.gateway.schemas import COMPONENTS, ref

SECURITY_SCHEMES: dict[str, Any] = {  # the session cookie's name as `build_openapi` says
    "bearer": {"type": "http", "scheme": "bearer", "description": "an API token, sk-aic-..."},
    "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
    "session": {"type": "apiKey", "in": "cookie", "name": SECURE_SESSION_COOKIE},
}
_ERROR_CONTENT = {"application/json": {"schema": ref("Error")}}
_RATE_HEADERS = {
    "X-RateLimit-Limit": "bucket size (burst)",
    "X-RateLimit-Remaining": "requests left in the bucket",
    "X-RateLimit-Reset": "seconds until the bucket is full again",
}
_COMMON_ERRORS: dict[int, str] = {
    400: "invalid_argument: a bad parameter or body; the message names the field or key",
    401: "unauthorized: no, malformed, unknown, revoked or expired credentials",
    403: "forbidden: the token lacks the scope, or a cross-origin cookie write",
    429: "rate_limited: see Retry-After",
    500: "internal: an unexpected failure",
    503: "unavailable: the vault is unreachable",
    504: "deadline_exceeded: the vault did not answer in time",
}
_DEBUG_PARAM = {
    "name": "X-Debug-Auth",
    "in": "header",
    "required": False,
    "description": "true adds an X-Debug-Auth response header describing the authentication",
    "schema": {"type": "string", "enum": ["true", "false"]},
}


def _header_docs(names: dict[str, str]) -> dict[str, Any]:
    return {
        name: {"description": text, "schema": {"type": "string"}} for name, text in names.items()
    }


def _rest_operation(endpoint: Endpoint) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": schema}
        for name, schema in endpoint.path_params.items()
    ]
    parameters += [
        {
            "name": q.name,
            "in": "query",
            "required": False,
            "schema": q.schema,
            "description": q.description,
        }
        for q in endpoint.query
    ]
    parameters.append(_DEBUG_PARAM)
    success_headers = {**_RATE_HEADERS, **endpoint.response_headers}
    responses: dict[str, Any] = {
        str(endpoint.success_status): {
            "description": "success",
            "headers": _header_docs(success_headers),
            "content": {"application/json": {"schema": endpoint.response_schema}},
        }
    }
    errors = dict(_COMMON_ERRORS)
    for status, code in endpoint.errors.items():
        errors[status] = code
    if endpoint.request_schema is not None:
        errors[413] = "payload_too_large: the body is over the size limit"
    for status, text in sorted(errors.items()):
        responses[str(status)] = {"description": text, "content": _ERROR_CONTENT}
    responses["default"] = {"description": "an error", "content": _ERROR_CONTENT}
    security: list[dict[str, list[str]]] = [{"bearer": []}, {"apiKey": []}]
    if not endpoint.token_only:
        security.append({"session": []})
    operation: dict[str, Any] = {
        "summary": endpoint.summary,
        "operationId": _operation_id(endpoint.method, endpoint.path),
        "tags": [endpoint.tag],
        "parameters": parameters,
        "responses": responses,
        "security": security,
    }
    if endpoint.scope is not None:
        operation["description"] = f"Needs the scope `{endpoint.scope}`."
    if endpoint.request_schema is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": endpoint.request_schema}},
        }
    return operation


def _plain_operation(endpoint: PlainEndpoint, method: str) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": endpoint.summary,
        "operationId": _operation_id(method, endpoint.openapi_path),
        "tags": [endpoint.tag],
        "responses": dict(endpoint.responses),
        "security": ([{"bearer": []}, {"apiKey": []}] if endpoint.security else []),
    }
    if endpoint.path_params:
        operation["parameters"] = [
            {"name": name, "in": "path", "required": True, "schema": schema}
            for name, schema in endpoint.path_params.items()
        ]
    if endpoint.request_body is not None:
        operation["requestBody"] = dict(endpoint.request_body)
    return operation


def _operation_id(method: str, path: str) -> str:
    words = [part.strip("{}") for part in path.strip("/").split("/") if part]
    return "_".join([method.lower(), *(w.replace("-", "_").replace(".", "_") for w in words)])


def build_openapi(
    rest: Sequence[Endpoint],
    plain: Sequence[PlainEndpoint],
    *,
    version: str,
    session_cookie: str = SECURE_SESSION_COOKIE,
) -> dict[str, Any]:
    """The document describing every operation given; `session_cookie` is the session
    cookie's name in force."""
    schemes = {
        **SECURITY_SCHEMES,
        "session": {**SECURITY_SCHEMES["session"], "name": session_cookie},
    }
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in rest:
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = _rest_operation(endpoint)
    for plain_endpoint in plain:
        item = paths.setdefault(plain_endpoint.openapi_path, {})
        for method in plain_endpoint.methods:
            item[method.lower()] = _plain_operation(plain_endpoint, method)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "aicreds gateway",
            "version": version,
            "description": (
                "REST API v2 for AI-provider credentials, providers, API tokens and sessions. "
                'Success bodies are {"response": ...}; errors {"error": {"code", '
                '"message"}}.'
            ),
        },
        "paths": paths,
        "components": {"schemas": COMPONENTS, "securitySchemes": schemes},
    }
