"""REST v2 endpoints: one table entry per operation, turned into a route and into OpenAPI.

An `Endpoint` names its method, path, the scope it needs, its handler and the JSON schemas of
its request and of its `response` object. `rest_route` wraps the handler so that every REST
call is admitted by the `Gate` (auth, rate limit, scope, Origin), has its body read with the
size limit, gets the `{"response": ...}` envelope on success and `{"error": {code, message}}`
on failure, and always carries the admission's headers. `openapi.py` reads the same entries,
so the document cannot drift from the routes.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from services.gateway.auth import Principal
from services.gateway.errors import ApiError, invalid_argument
from services.gateway.observability import USER_SCOPE_KEY
from services.gateway.validation import parse_flag

if TYPE_CHECKING:
    from services.gateway.app import Gateway

JsonSchema = dict[str, Any]
_CONVERTER = re.compile(r"\{(\w+):\w+\}")
_log = logging.getLogger("aicreds.gateway")


@dataclass(frozen=True)
class Reply:
    """A successful REST answer: the object inside `{"response": ...}`, status and headers."""

    body: Mapping[str, Any]
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class QueryParam:
    name: str
    schema: JsonSchema
    description: str


class ApiCall:
    """What a REST handler gets: the request, the admitted principal and the gateway."""

    def __init__(self, request: Request, principal: Principal, gateway: Gateway) -> None:
        self.request = request
        self.principal = principal
        self.gateway = gateway

    @property
    def user_id(self) -> str:
        """`me`: the user of the authenticated token."""
        return self.principal.user_id

    def path_param(self, name: str) -> str:
        return str(self.request.path_params[name])

    def flag(self, name: str) -> bool:
        return parse_flag(self.request.query_params.get(name), name)

    async def json(self) -> Any:
        """The JSON body, read with the size limit (413 above it, 400 if not JSON)."""
        raw = await read_body(self.request, self.gateway.settings.max_body)
        if not raw.strip():
            raise invalid_argument("the request body is empty; send a JSON object")
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            raise invalid_argument("the request body is not valid JSON") from None


Handler = Callable[[ApiCall], Awaitable[Reply]]
PlainHandler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class Endpoint:
    """One REST operation."""

    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    response_schema: JsonSchema
    scope: str | None = None
    success_status: int = 200
    request_schema: JsonSchema | None = None
    query: Sequence[QueryParam] = ()
    path_params: Mapping[str, JsonSchema] = field(default_factory=dict)
    # Statuses this operation answers besides success and the common auth/limit ones.
    errors: Mapping[int, str] = field(default_factory=dict)
    # Only an API token admits this operation (e.g. creating a session), not a session cookie.
    token_only: bool = False
    # Extra response headers on success (name -> description), e.g. Set-Cookie.
    response_headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PlainEndpoint:
    """An operation outside the REST envelope (ops endpoints, the model endpoints).

    `path` is a Starlette path: a parameter is `{name}`, or `{name:path}` to take slashes too,
    and each is documented from `path_params` (name -> JSON schema). `other_methods` are
    routed to the same handler and documented as operations of their own. `responses` is the
    OpenAPI `responses` object; `security` False marks it public.
    """

    method: str
    path: str
    handler: PlainHandler
    summary: str
    tag: str
    responses: Mapping[str, Any]
    security: bool = False
    request_body: Mapping[str, Any] | None = None
    path_params: Mapping[str, JsonSchema] = field(default_factory=dict)
    other_methods: Sequence[str] = ()

    @property
    def methods(self) -> tuple[str, ...]:
        return (self.method, *self.other_methods)

    @property
    def openapi_path(self) -> str:
        """The path as an OpenAPI template: `/v1/{path:path}` is `/v1/{path}`."""
        return openapi_path(self.path)

    def route(self) -> Route:
        return Route(
            self.path, HandlerApp(self.handler), methods=list(self.methods), name=self.summary
        )


class HandlerApp:
    """The ASGI app of one route: `handler(Request)`, then its response.

    What Starlette's `request_response` does for a function endpoint, less the exception
    wrapper it builds around every call: errors are handled once, by `edge.GatewayEdge`.
    """

    __slots__ = ("handler",)

    def __init__(self, handler: PlainHandler) -> None:
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.handler(Request(scope, receive, send))
        await response(scope, receive, send)


def openapi_path(path: str) -> str:
    """A Starlette path as an OpenAPI path template (parameter converters dropped)."""
    return _CONVERTER.sub(r"{\1}", path)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than `limit` bytes with 413 before reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise _too_large(limit)
        except ValueError:
            raise invalid_argument("invalid Content-Length") from None
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
    except ClientDisconnect:
        raise ApiError(499, "cancelled", "client closed the request") from None
    return b"".join(chunks)


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "payload_too_large", f"the request body is larger than {limit} bytes")


def error_response(err: ApiError, extra_headers: Mapping[str, str] | None = None) -> JSONResponse:
    """The REST shape of an error."""
    headers = {**(extra_headers or {}), **err.headers}
    return JSONResponse(err.body(), status_code=err.status, headers=headers)


def rest_route(endpoint: Endpoint, gateway: Gateway) -> Route:
    """A Starlette route running `endpoint` behind the gate and in the REST envelope."""

    async def run(request: Request) -> Response:
        admitted_headers: dict[str, str] = {}
        try:
            admission = await gateway.gate.admit(
                request, scope=endpoint.scope, allow_session=not endpoint.token_only
            )
            admitted_headers = admission.headers
            request.scope[USER_SCOPE_KEY] = admission.principal.user_id
            reply = await endpoint.handler(ApiCall(request, admission.principal, gateway))
        except ApiError as err:
            return error_response(err, admitted_headers)
        except Exception as err:  # the one place an unexpected error becomes a 500
            _log.error(
                "unhandled error in endpoint",
                extra={"fields": {"route": endpoint.path, "error": type(err).__name__}},
            )
            return error_response(ApiError(500, "internal", "internal error"), admitted_headers)
        headers = {**admitted_headers, **reply.headers}
        return JSONResponse(
            {"response": dict(reply.body)}, status_code=reply.status, headers=headers
        )

    return Route(endpoint.path, HandlerApp(run), methods=[endpoint.method], name=endpoint.summary)
