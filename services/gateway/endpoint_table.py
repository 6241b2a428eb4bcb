"""Endpoint tables: one entry per operation, turned into a route and into OpenAPI.

An `Endpoint` (REST v2) names its method, path, the scope it needs, its handler and the JSON
schemas of its request and of its `response` object. `rest_route` wraps the handler so that
every REST call is admitted by `Admission` (auth, rate limit, scope, Origin), has its body read
with the size limit, gets the `{"response": ...}` envelope on success, and always carries the
admission's headers. A `PlainEndpoint` (operational and model endpoints) answers for itself.

Every route is an `EndpointRoute` carrying its `ErrorRenderer`; the one ASGI layer
(`middleware.py`) renders what a route raises with it: `ApiError` as it is, anything else as a
fixed 500. `openapi.py` reads the same entries, so the document cannot drift from the routes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from services.gateway.admission import Admission
from services.gateway.auth import Principal
from services.gateway.errors import ApiError, invalid_argument, rest_error_response
from services.gateway.validation import parse_flag

JsonSchema = dict[str, Any]
_CONVERTER = re.compile(r"\{(\w+):\w+\}")


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
    """What a REST handler gets: the request and the admitted principal."""

    def __init__(self, request: Request, principal: Principal, max_body: int) -> None:
        self.request = request
        self.principal = principal
        self._max_body = max_body

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
        raw = await read_body(self.request, self._max_body)
        if not raw.strip():
            raise invalid_argument("the request body is empty; send a JSON object")
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            raise invalid_argument("the request body is not valid JSON") from None


Handler = Callable[[ApiCall], Awaitable[Reply]]
PlainHandler = Callable[[Request], Awaitable[Response]]
#: How a route answers an error: REST v2's envelope, OpenAI's or Anthropic's shape. The
#: middleware renders every error a route raises with it, unexpected ones as a fixed 500.
ErrorRenderer = Callable[[Request, ApiError], Response]


def rest_errors(request: Request, error: ApiError) -> Response:
    """The REST v2 renderer: `{"error": {"code", "message"}}`."""
    return rest_error_response(error)


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
    render_error: ErrorRenderer = rest_errors

    @property
    def methods(self) -> tuple[str, ...]:
        return (self.method, *self.other_methods)

    @property
    def openapi_path(self) -> str:
        """The path as an OpenAPI template: `/v1/{path:path}` is `/v1/{path}`."""
        return openapi_path(self.path)

    def route(self) -> EndpointRoute:
        return EndpointRoute(
            self.path,
            HandlerApp(self.handler),
            methods=list(self.methods),
            name=self.summary,
            render_error=self.render_error,
        )


class EndpointRoute(Route):
    """A Starlette route that knows the error shape of its answers (`render_error`)."""

    def __init__(
        self,
        path: str,
        endpoint: Callable[..., Any],
        *,
        methods: list[str],
        name: str,
        render_error: ErrorRenderer,
    ) -> None:
        super().__init__(path, endpoint, methods=methods, name=name)
        self.render_error = render_error


class HandlerApp:
    """The ASGI app of one route: `handler(Request)`, then its response.

    What Starlette's `request_response` does for a function endpoint, less the exception
    wrapper it builds around every call: errors are handled once, by `middleware.py`.
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


def rest_route(endpoint: Endpoint, admission: Admission, max_body: int) -> EndpointRoute:
    """A route running `endpoint` behind `admission` and in the REST envelope.

    Errors are raised, not answered here: the middleware renders them with `rest_errors`,
    adding the admission's headers.
    """

    async def run(request: Request) -> Response:
        admitted = await admission.admit(
            request, scope=endpoint.scope, allow_session=not endpoint.token_only
        )
        reply = await endpoint.handler(ApiCall(request, admitted.principal, max_body))
        headers = {**admitted.headers, **reply.headers}
        return JSONResponse(
            {"response": dict(reply.body)}, status_code=reply.status, headers=headers
        )

    return EndpointRoute(
        endpoint.path,
        HandlerApp(run),
        methods=[endpoint.method],
        name=endpoint.summary,
        render_error=rest_errors,
    )
