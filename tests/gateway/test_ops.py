"""Operational endpoints against a real vault and a real gateway over HTTP (SPEC 2.7)."""

from __future__ import annotations

import logging
import re

import pytest
from starlette.routing import Route

from tests.support.stack import Stack, StackFactory, unused_address


async def test_healthz(stack: Stack) -> None:
    response = await stack.client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response.headers["x-request-id"]


async def test_readyz_reports_each_backend(gateway_stack: StackFactory) -> None:
    # The vault is up; no router listens at the configured address.
    stack = await gateway_stack(router_addr=unused_address())
    response = await stack.client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {
        "status": "not_ready",
        "checks": {"vault": "ok", "router": "unavailable"},
    }


async def test_readyz_ready_with_a_real_router(stack: Stack) -> None:
    response = await stack.client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"vault": "ok", "router": "ok"}}


async def test_readyz_when_vault_goes_away(gateway_stack: StackFactory) -> None:
    stack = await gateway_stack()
    await stack.vault.running.stop(0)
    response = await stack.client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["vault"] == "unavailable"


async def test_openapi_is_3_1_and_lists_every_endpoint(stack: Stack) -> None:
    response = await stack.client.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.1")
    operations = {
        (method.upper(), path) for path, item in document["paths"].items() for method in item
    }
    base = "/api/v2/users/me"
    assert operations >= {
        ("GET", f"{base}/ai-credentials"),
        ("PUT", f"{base}/ai-credentials"),
        ("DELETE", f"{base}/ai-credentials"),
        ("GET", f"{base}/ai-credentials/{{key}}"),
        ("PUT", f"{base}/ai-credentials/{{key}}"),
        ("DELETE", f"{base}/ai-credentials/{{key}}"),
        ("GET", f"{base}/ai-providers"),
        ("POST", f"{base}/ai-providers"),
        ("GET", f"{base}/ai-providers/{{name}}"),
        ("PUT", f"{base}/ai-providers/{{name}}"),
        ("DELETE", f"{base}/ai-providers/{{name}}"),
        ("GET", f"{base}/api-tokens"),
        ("POST", f"{base}/api-tokens"),
        ("DELETE", f"{base}/api-tokens/{{id}}"),
        ("POST", "/api/v2/sessions"),
        ("DELETE", "/api/v2/sessions/current"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
    }


async def test_every_route_is_documented(stack: Stack) -> None:
    """Every endpoint, the model endpoints' path parameters included: the routes served and
    the operations documented are the same set, and each path parameter is declared."""
    document = (await stack.client.get("/openapi.json")).json()
    documented = {
        (method.upper(), path) for path, item in document["paths"].items() for method in item
    }
    served = {
        (method, re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path))
        for route in stack.app.routes
        if isinstance(route, Route)  # the only routes with methods
        if getattr(route, "include_in_schema", True)  # not the web UI's pages (web_ui/)
        for method in getattr(route, "methods", None) or ()
        if method != "HEAD"
    }
    assert served == documented
    assert {("GET", "/v1/models/{model_id}"), ("POST", "/v1/{path}")} <= documented
    for path, item in document["paths"].items():
        for operation in item.values():
            declared = {p["name"] for p in operation.get("parameters", ()) if p["in"] == "path"}
            assert declared == set(re.findall(r"\{(\w+)\}", path)), path


async def test_unknown_route_and_method_in_error_shape(stack: Stack) -> None:
    response = await stack.client.get("/api/v2/nothing-here")
    assert response.status_code == 404
    assert response.json() == {"error": {"code": "not_found", "message": "no such endpoint"}}
    response = await stack.client.patch("/api/v2/users/me/ai-credentials")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


async def test_metrics_count_requests_by_route_template(stack: Stack) -> None:
    await stack.client.get("/api/v2/users/me/ai-credentials/some_key")
    await stack.client.get("/healthz")
    text = (await stack.client.get("/metrics")).text
    assert (
        'aicreds_gateway_http_requests_total{method="GET",'
        'route="/api/v2/users/me/ai-credentials/{key}",status="401"} 1.0'
    ) in text
    assert "aicreds_gateway_http_request_duration_seconds_bucket" in text
    assert "some_key" not in text


async def test_access_log_line_per_request(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="aicreds.gateway.access")
    response = await stack.client.get("/healthz", headers={"X-Request-Id": "req-123"})
    assert response.headers["x-request-id"] == "req-123"
    lines = [r for r in caplog.records if r.name == "aicreds.gateway.access"]
    assert len(lines) == 1
    fields = lines[0].fields  # type: ignore[attr-defined]
    assert fields["request_id"] == "req-123"
    assert fields["route"] == "/healthz"
    assert fields["status"] == 200
    assert fields["ms"] >= 0


async def test_request_id_reaches_the_vault(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    minted = await stack.mint("alice")
    response = await stack.client.get(
        "/api/v2/users/me/ai-credentials",
        headers={**minted.bearer(), "X-Request-Id": "req-vault-1"},
    )
    assert response.status_code == 200
    vault_lines = [
        r.fields  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == "aicreds.access" and isinstance(getattr(r, "fields", None), dict)
    ]
    assert any(
        line.get("request_id") == "req-vault-1" and "GetCredentials" in line.get("method", "")
        for line in vault_lines
    ), vault_lines
