"""The one ASGI layer (`middleware.py`: request id, error shapes, metrics, access log) on a small
application served by a real uvicorn; its rendering of REST v2 errors with the route's renderer.
The route lookup (`route_index.py`) is in `test_route_index.py`."""

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
from starlette.routing import BaseRoute, Route

from services.common.logging import JsonFormatter
from services.common.request_context import current_request_id
from services.gateway.admission import ADMITTED_HEADERS_KEY, Admitted
from services.gateway.auth import AuthMethod, Principal
from services.gateway.endpoint_table import (
    ApiCall,
    Endpoint,
    Handler,
    HandlerApp,
    PlainHandler,
    Reply,
    rest_route,
)
from services.gateway.errors import ApiError
from services.gateway.middleware import GatewayApplication
from services.gateway.observability import Metrics
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
    assert errors == [{"error": "RuntimeError", "route": "/boom"}]  # logged once
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
    with pytest.raises(RuntimeError, match="middleware.py"):
        app.build_middleware_stack()


# -- a REST v2 route: errors in the envelope, with the admission's headers ----------------------


class _AdmitEveryone:
    """Stands in for `Admission`: admits with a rate-limit header, recorded as it records it."""

    async def admit(self, request: Request, *, scope: str | None, allow_session: bool) -> Admitted:
        admitted = Admitted(
            Principal("alice", "tok_1", "sk-aic-x", frozenset(), AuthMethod.BEARER),
            {"X-RateLimit-Limit": "9"},
        )
        request.scope[ADMITTED_HEADERS_KEY] = admitted.headers
        return admitted


async def _rest_explodes(call: ApiCall) -> Reply:
    raise RuntimeError(SECRET_IN_ERROR)


async def _rest_refuses(call: ApiCall) -> Reply:
    raise ApiError(404, "credential_not_found", "credential 'k' not found")


def _rest(path: str, handler: Handler) -> BaseRoute:
    endpoint = Endpoint("GET", path, handler, path, "test", {})
    return rest_route(endpoint, _AdmitEveryone(), 1024)  # type: ignore[arg-type]


async def test_a_rest_handler_error_is_rendered_in_the_envelope_with_the_admission_headers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = GatewayApplication(
        metrics=Metrics(),
        routes=[_rest("/rest/boom", _rest_explodes), _rest("/rest/missing", _rest_refuses)],
    )
    async with serve_asgi(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        boom = await client.get("/rest/boom")
        missing = await client.get("/rest/missing")
    assert boom.status_code == 500
    assert boom.json() == {"error": {"code": "internal", "message": "internal error"}}
    assert SECRET_IN_ERROR not in boom.text
    assert missing.status_code == 404
    assert missing.json() == {
        "error": {"code": "credential_not_found", "message": "credential 'k' not found"}
    }
    for response in (boom, missing):
        assert response.headers["x-ratelimit-limit"] == "9"
    errors = [getattr(r, "fields", {}) for r in caplog.records if r.name == "aicreds.gateway"]
    assert errors == [{"error": "RuntimeError", "route": "/rest/boom"}]
