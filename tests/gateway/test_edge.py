"""The edge layer (request id, error shapes, metrics, access log) and its route lookup, on a
small application served by a real uvicorn; and the route lookup against Starlette's rule on the
gateway's own routes."""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, Route

from services.common.logging import JsonFormatter
from services.common.request_context import current_request_id
from services.gateway.app import create_app
from services.gateway.edge import GatewayApplication
from services.gateway.observability import Metrics
from services.gateway.rest import HandlerApp, PlainHandler
from services.gateway.routing import RouteTable
from services.gateway.settings import GatewaySettings
from tests.support.asgi import serve_asgi

SECRET_IN_ERROR = "sk-never-in-a-log-" + "K" * 20


async def _ok(request: Request) -> Response:
    return JSONResponse({"request_id": current_request_id(), "item": request.path_params})


async def _log_a_line(request: Request) -> Response:
    logging.getLogger("aicreds.gateway.test").warning("a line written while handling")
    return JSONResponse({})


async def _explode(request: Request) -> Response:
    raise RuntimeError(SECRET_IN_ERROR)


def _route(path: str, handler: PlainHandler, *methods: str) -> Route:
    return Route(path, HandlerApp(handler), methods=list(methods or ("GET",)))


@asynccontextmanager
async def _served() -> AsyncIterator[tuple[httpx.AsyncClient, Metrics]]:
    metrics = Metrics()
    app = GatewayApplication(
        metrics=metrics,
        routes=[
            _route("/items/{item}", _ok, "GET", "PUT"),
            _route("/boom", _explode),
            _route("/log", _log_a_line),
        ],
    )
    async with serve_asgi(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        yield client, metrics


async def test_request_id_is_kept_when_sane_and_made_otherwise() -> None:
    async with _served() as (client, _):
        kept = await client.get("/items/a", headers={"X-Request-Id": "req-1.A_b"})
        assert kept.headers["x-request-id"] == "req-1.A_b"
        assert kept.json()["request_id"] == "req-1.A_b"  # the current id inside the handler
        for bad in ("has space", "x" * 129, "semi;colon"):
            made = await client.get("/items/a", headers={"X-Request-Id": bad})
            minted = made.headers["x-request-id"]
            assert minted != bad and re.fullmatch(r"[0-9a-f]{32}", minted)
            assert uuid.UUID(minted).version == 4
            assert made.json()["request_id"] == minted
        first = (await client.get("/items/a")).headers["x-request-id"]
        assert first != (await client.get("/items/a")).headers["x-request-id"]


async def test_routing_errors_in_the_api_shape_with_a_request_id() -> None:
    async with _served() as (client, metrics):
        missing = await client.get("/nothing/here")
        assert missing.status_code == 404
        assert missing.json() == {"error": {"code": "not_found", "message": "no such endpoint"}}
        assert missing.headers["x-request-id"]
        wrong = await client.delete("/items/a")
        assert wrong.status_code == 405
        assert wrong.json()["error"]["code"] == "method_not_allowed"
        assert set(wrong.headers["allow"].split(", ")) == {"GET", "HEAD", "PUT"}
        assert wrong.headers["x-request-id"]
        trailing = await client.get("/items/a/")  # no slash redirects
        assert trailing.status_code == 404
    exposition = metrics.registry.get_sample_value(
        "aicreds_gateway_http_requests_total",
        {"method": "GET", "route": "<unmatched>", "status": "404"},
    )
    assert exposition == 2.0
    assert (
        metrics.registry.get_sample_value(
            "aicreds_gateway_http_requests_total",
            {"method": "DELETE", "route": "/items/{item}", "status": "405"},
        )
        == 1.0
    )


class _JsonLines(logging.Handler):
    """Formats each record as the service does, at once (inside the request's context)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter("gateway"))
        self.lines: list[dict[str, object]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


async def test_every_log_line_written_during_a_request_carries_its_request_id() -> None:
    lines = _JsonLines()
    logger = logging.getLogger("aicreds.gateway.test")
    logger.addHandler(lines)
    try:
        async with _served() as (client, _):
            await client.get("/log", headers={"X-Request-Id": "req-log-1"})
    finally:
        logger.removeHandler(lines)
    assert [(line["message"], line.get("request_id")) for line in lines.lines] == [
        ("a line written while handling", "req-log-1")
    ]


async def test_an_unexpected_error_is_a_fixed_500_logged_by_type_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with _served() as (client, metrics):
        response = await client.get("/boom", headers={"X-Request-Id": "req-boom"})
    assert response.status_code == 500
    assert response.json() == {"error": {"code": "internal", "message": "internal error"}}
    assert response.headers["x-request-id"] == "req-boom"
    access = [r.fields for r in caplog.records if r.name == "aicreds.gateway.access"]  # type: ignore[attr-defined]
    assert [(a["request_id"], a["route"], a["status"]) for a in access] == [
        ("req-boom", "/boom", 500)
    ]
    errors = [getattr(r, "fields", {}) for r in caplog.records if r.name == "aicreds.gateway"]
    assert {"error": "RuntimeError"} in errors
    # As the service writes them (JSON lines: an exception by its type only).
    written = "\n".join(JsonFormatter("gateway").format(r) for r in caplog.records)
    assert "RuntimeError" in written and SECRET_IN_ERROR not in written
    assert (
        metrics.registry.get_sample_value(
            "aicreds_gateway_http_requests_total",
            {"method": "GET", "route": "/boom", "status": "500"},
        )
        == 1.0
    )


async def test_each_request_is_counted_once_with_its_latency() -> None:
    async with _served() as (client, metrics):
        for _ in range(3):
            assert (await client.get("/items/a")).status_code == 200
        assert (await client.put("/items/b")).status_code == 200
    labels = {"method": "GET", "route": "/items/{item}"}
    registry = metrics.registry
    assert (
        registry.get_sample_value(
            "aicreds_gateway_http_requests_total", {**labels, "status": "200"}
        )
        == 3.0
    )
    assert (
        registry.get_sample_value("aicreds_gateway_http_request_duration_seconds_count", labels)
        == 3.0
    )
    assert (
        registry.get_sample_value(
            "aicreds_gateway_http_request_duration_seconds_count",
            {"method": "PUT", "route": "/items/{item}"},
        )
        == 1.0
    )


def test_middleware_and_exception_handlers_are_refused() -> None:
    app = GatewayApplication(metrics=Metrics(), routes=[], exception_handlers={404: _ok})
    with pytest.raises(RuntimeError, match="edge.py"):
        app.build_middleware_stack()


# The route lookup


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
def test_route_table_picks_what_starlette_picks_on_the_gateway_routes(method: str) -> None:
    app = create_app(GatewaySettings())
    routes = list(app.routes)
    table = RouteTable(routes)
    for path in GATEWAY_PATHS:
        scope = _scope(method, path)
        assert table.match(scope)[0] is _starlette_choice(routes, scope), (method, path)


def test_route_table_keeps_the_order_of_routes_without_a_literal_first_segment() -> None:
    first = _route("/a/x", _ok)
    any_first = _route("/{p}/x", _ok)
    later = _route("/a/{q}", _ok)
    get_only = _route("/m", _ok, "GET")
    post_only = _route("/m", _ok, "POST")
    routes: list[BaseRoute] = [first, any_first, later, get_only, post_only]
    table = RouteTable(routes)
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
