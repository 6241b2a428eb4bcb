"""The one ASGI layer between uvicorn and the gateway's routes.

For every HTTP request, `GatewayEdge`:

1. takes the request id (a sane client `X-Request-Id`, else a new one), makes it the current
   one, and adds it to the response as `x-request-id`;
2. finds the route (`routing.RouteTable`, Starlette's matching rules) and runs it;
3. turns a missing route (404), a wrong method (405) or any `HTTPException` into the API's
   error shape, and any other exception into a fixed 500 `internal error` (logged by type only:
   its text may hold a secret), which is then re-raised so the server logs it and, if the
   answer had begun, closes the connection rather than end a truncated body cleanly;
4. after the response, updates the metrics and writes the access-log line.

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

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response
from starlette.routing import Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common.request_context import bind_request_id, unbind_request_id
from services.gateway.observability import Metrics, log_access, request_id_for, route_template
from services.gateway.routing import RouteTable

_log = logging.getLogger("aicreds.gateway")

_CODES = {404: "not_found", 405: "method_not_allowed"}
_MESSAGES = {404: "no such endpoint", 405: "method not allowed for this endpoint"}


def http_error_response(exc: HTTPException) -> Response:
    """A routing error (404 no route, 405 wrong method) or another `HTTPException`, in the
    API's error shape."""
    status = exc.status_code
    body = {
        "error": {
            "code": _CODES.get(status, "error"),
            "message": _MESSAGES.get(status, "request failed"),
        }
    }
    return JSONResponse(body, status_code=status, headers=dict(exc.headers or {}))


def internal_error_response() -> Response:
    return JSONResponse(
        {"error": {"code": "internal", "message": "internal error"}}, status_code=500
    )


class GatewayEdge:
    """Request id, routing, error shapes, metrics and the access log (see the module doc)."""

    def __init__(self, router: Router, metrics: Metrics) -> None:
        self._router = router
        self._routes = RouteTable(router.routes)
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._router(scope, receive, send)  # lifespan
            return
        start = time.perf_counter()
        request_id = request_id_for(scope)
        id_header = (b"x-request-id", request_id.encode("ascii"))
        token = bind_request_id(request_id)
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
        except HTTPException as exc:
            if started:
                raise
            await http_error_response(exc)(scope, receive, send_with_id)
        except Exception as exc:
            _log.error("unhandled error", extra={"fields": {"error": type(exc).__name__}})
            if not started:
                await internal_error_response()(scope, receive, send_with_id)
            raise
        finally:
            elapsed = time.perf_counter() - start
            method: str = scope["method"]
            route = route_template(scope)
            self._metrics.record_request(method, route, status, elapsed)
            log_access(scope, request_id, method, route, status, elapsed)
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
    """A Starlette application whose whole middleware stack is `GatewayEdge`.

    Starlette's own error middlewares, `middleware=` and `exception_handlers=` are not used:
    the edge layer is the one place for them, so adding either is refused.
    """

    def __init__(self, *, metrics: Metrics, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._metrics = metrics
        # A path is served as sent: no redirect from `/x/` to `/x` (nor the other way).
        self.router.redirect_slashes = False

    def build_middleware_stack(self) -> ASGIApp:
        if self.user_middleware or self.exception_handlers:
            raise RuntimeError("the gateway's middleware and error handling live in edge.py")
        return GatewayEdge(self.router, self._metrics)
