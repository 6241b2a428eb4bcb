"""The one ASGI layer between uvicorn and the gateway's routes.

For every HTTP request, `EdgeMiddleware`:

1. takes the request id (a sane client `X-Request-Id`, else a new one), makes it the current
   one, and adds it to the response as `x-request-id`;
2. finds the route (`route_index.RouteIndex`, Starlette's matching rules) and runs it;
3. renders what the route raised with the route's own `ErrorRenderer` (REST v2's envelope,
   OpenAI's or Anthropic's shape), adding the admission's headers: an `ApiError` as it is, a
   missing route (404), a wrong method (405) or another `HTTPException` in REST v2's shape,
   and any other exception as a fixed 500 `internal error`, logged once here (the service's
   log format writes it by type only: its text may hold a secret). An exception after the
   answer began is re-raised instead, so that the server closes the connection rather than
   end a truncated body cleanly;
4. after the response, updates the metrics and writes the access-log line;
5. with a tracer (tracing on), makes the request a SERVER span, current while it is served
   (`http_tracing.py`).

This replaces Starlette's default stack (`ServerErrorMiddleware`, our middleware,
`ExceptionMiddleware`, the `Router`'s linear scan, and the exception wrapper around each
endpoint): one `send` wrapper per request instead of four, and one error-mapping place.
`GatewayApplication` is the Starlette application that uses it; lifespan events go to the
Starlette router as before.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from opentelemetry.trace import Tracer
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common.request_context import bind_request_id, unbind_request_id
from services.gateway.admission import admitted_headers
from services.gateway.endpoint_table import EndpointRoute, rest_errors
from services.gateway.errors import ApiError, internal_error
from services.gateway.http_tracing import end_request_span, start_request_span
from services.gateway.observability import Metrics, log_access, request_id_for, route_template
from services.gateway.route_index import RouteIndex

_log = logging.getLogger("aicreds.gateway")

_CODES = {404: "not_found", 405: "method_not_allowed"}
_MESSAGES = {404: "no such endpoint", 405: "method not allowed for this endpoint"}


def http_error(exc: HTTPException) -> ApiError:
    """A routing error (404 no route, 405 wrong method) or another `HTTPException`."""
    status = exc.status_code
    return ApiError(
        status,
        _CODES.get(status, "error"),
        _MESSAGES.get(status, "request failed"),
        headers=dict(exc.headers or {}),
    )


def error_response(scope: Scope, receive: Receive, error: ApiError) -> Response:
    """`error` in the shape of the route that raised it (REST v2's when none matched), with
    the headers of the request's admission."""
    route = scope.get("route")
    render = route.render_error if isinstance(route, EndpointRoute) else rest_errors
    error.headers = {**admitted_headers(scope), **error.headers}
    return render(Request(scope, receive), error)


class EdgeMiddleware:
    """Request id, routing, error shapes, metrics, the access log and the request's span (see
    the module doc)."""

    def __init__(self, router: Router, metrics: Metrics, tracer: Tracer | None = None) -> None:
        self._router = router
        self._routes = RouteIndex(router.routes)
        self._metrics = metrics
        self._tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._router(scope, receive, send)  # lifespan
            return
        start = time.perf_counter()
        request_id = request_id_for(scope)
        id_header = (b"x-request-id", request_id.encode("ascii"))
        token = bind_request_id(request_id)
        span = start_request_span(self._tracer, scope) if self._tracer is not None else None
        status = 500
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = int(message["status"])
                message = {**message, "headers": [*message.get("headers", ()), id_header]}
            await send(message)

        try:
            await self._route(scope, receive, send_with_id)
        except (ApiError, HTTPException) as exc:
            if started:
                raise
            error = exc if isinstance(exc, ApiError) else http_error(exc)
            await error_response(scope, receive, error)(scope, receive, send_with_id)
        except Exception as exc:
            if started:
                # Too late for an error answer: the server logs it and closes the connection,
                # so a truncated body cannot pass for a whole one.
                raise
            # The one place an unexpected exception is logged and becomes a 500. The service's
            # log format writes the exception by its type only: its text may hold a secret.
            _log.error(
                "unhandled error",
                exc_info=exc,
                extra={"fields": {"error": type(exc).__name__, "route": route_template(scope)}},
            )
            response = error_response(scope, receive, internal_error())
            await response(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - start
            method: str = scope["method"]
            route = route_template(scope)
            self._metrics.record_request(method, route, status, elapsed)
            log_access(scope, request_id, method, route, status, elapsed)
            if span is not None:
                end_request_span(span, scope, route, status)
            unbind_request_id(token)

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["router"] = self._router
        route, child_scope = self._routes.match(scope)
        if route is None:
            raise HTTPException(status_code=404)
        scope["route"] = route
        scope.update(child_scope)
        await route.handle(scope, receive, send)  # a wrong method raises HTTPException(405)


class GatewayApplication(Starlette):
    """A Starlette application whose whole middleware stack is `EdgeMiddleware`.

    Starlette's own error middlewares, `middleware=` and `exception_handlers=` are not used:
    this middleware is the one place for them, so adding either is refused.
    """

    def __init__(self, *, metrics: Metrics, tracer: Tracer | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._metrics = metrics
        self._tracer = tracer
        # A path is served as sent: no redirect from `/x/` to `/x` (nor the other way).
        self.router.redirect_slashes = False

    def build_middleware_stack(self) -> ASGIApp:
        if self.user_middleware or self.exception_handlers:
            raise RuntimeError(
                "the gateway's middleware and error handling live in services/gateway/middleware.py"
            )
        return EdgeMiddleware(self.router, self._metrics, self._tracer)
