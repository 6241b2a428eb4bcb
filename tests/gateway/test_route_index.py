"""The route lookup (`route_index.RouteIndex`) picks what Starlette's linear scan would pick,
on the gateway's own routes and on hand-made ones."""

from __future__ import annotations

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, Route

from services.gateway.app import create_app
from services.gateway.endpoint_table import HandlerApp, PlainHandler
from services.gateway.route_index import RouteIndex
from services.gateway.settings import GatewaySettings

# The route lookup


async def _ok(request: Request) -> Response:
    return JSONResponse({})


def _route(path: str, handler: PlainHandler, *methods: str) -> Route:
    return Route(path, HandlerApp(handler), methods=list(methods or ("GET",)))


def _starlette_choice(routes: list[BaseRoute], scope: dict[str, object]) -> BaseRoute | None:
    """Starlette's `Router` rule: the first full match, else the first path-only match."""
    partial = None
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return route
        if match is Match.PARTIAL and partial is None:
            partial = route
    return partial


def _scope(method: str, path: str) -> dict[str, object]:
    return {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}


GATEWAY_PATHS = [
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/models",
    "/v1/models/gpt-4",
    "/v1/models/ft:gpt-4o:org/x",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/v1/responses",
    "/v1/images/generations",
    "/v1",
    "/v1/",
    "/api/v2/users/me/ai-credentials",
    "/api/v2/users/me/ai-credentials/openai_api_key",
    "/api/v2/users/me/ai-providers/openai",
    "/api/v2/users/me/api-tokens/tok_1",
    "/api/v2/sessions",
    "/api/v2/sessions/current",
    "/api/v2/nothing",
    "/healthz",
    "/healthz/",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/",
    "/nothing",
    "//v1/chat/completions",
]


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_route_index_picks_what_starlette_picks_on_the_gateway_routes(method: str) -> None:
    app = create_app(GatewaySettings())
    routes = list(app.routes)
    table = RouteIndex(routes)
    for path in GATEWAY_PATHS:
        scope = _scope(method, path)
        assert table.match(scope)[0] is _starlette_choice(routes, scope), (method, path)


def test_route_index_keeps_the_order_of_routes_without_a_literal_first_segment() -> None:
    first = _route("/a/x", _ok)
    any_first = _route("/{p}/x", _ok)
    later = _route("/a/{q}", _ok)
    get_only = _route("/m", _ok, "GET")
    post_only = _route("/m", _ok, "POST")
    routes: list[BaseRoute] = [first, any_first, later, get_only, post_only]
    table = RouteIndex(routes)
    expected = {
        ("GET", "/a/x"): first,
        ("GET", "/b/x"): any_first,
        ("GET", "/a/y"): later,
        ("GET", "/m/x"): any_first,
        ("POST", "/m"): post_only,
        ("PUT", "/m"): get_only,  # path-only match: answered with 405
        ("GET", "/b/y"): None,
    }
    for (method, path), route in expected.items():
        scope = _scope(method, path)
        assert table.match(scope)[0] is route, (method, path)
        assert _starlette_choice(routes, scope) is route, (method, path)
