"""Operational endpoints (SPEC 2.7): liveness, readiness, metrics and the OpenAPI document.

None of them needs authentication; none says anything about users.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from services.gateway.clients import RouterClient, VaultClient
from services.gateway.endpoint_table import PlainEndpoint
from services.gateway.observability import Metrics
from services.gateway.schemas import obj

_STATUS = obj({"status": {"type": "string"}}, ["status"])
_READY = obj(
    {
        "status": {"type": "string", "enum": ["ready", "not_ready"]},
        "checks": {
            "type": "object",
            "additionalProperties": {"type": "string", "enum": ["ok", "unavailable"]},
        },
    },
    ["status", "checks"],
)


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def endpoints(
    *,
    vault: VaultClient,
    router: RouterClient,
    metrics: Metrics,
    openapi_document: Callable[[], Mapping[str, Any]],
) -> list[PlainEndpoint]:
    """The operational endpoints: readiness asks `vault` and `router` for their health,
    `/metrics` exposes `metrics`, `/openapi.json` answers `openapi_document()`."""

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        vault_ok, router_ok = await asyncio.gather(vault.is_serving(), router.is_serving())
        checks = {
            "vault": "ok" if vault_ok else "unavailable",
            "router": "ok" if router_ok else "unavailable",
        }
        ready = vault_ok and router_ok
        return JSONResponse(
            {"status": "ready" if ready else "not_ready", "checks": checks},
            status_code=200 if ready else 503,
        )

    async def prometheus(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document())

    return [
        PlainEndpoint(
            "GET",
            "/healthz",
            healthz,
            "Liveness: the process is up",
            "operations",
            {"200": _json(_STATUS, "the process is up")},
        ),
        PlainEndpoint(
            "GET",
            "/readyz",
            readyz,
            "Readiness: the vault and the router answer",
            "operations",
            {
                "200": _json(_READY, "vault and router are reachable"),
                "503": _json(_READY, "a backend is unreachable"),
            },
        ),
        PlainEndpoint(
            "GET",
            "/metrics",
            prometheus,
            "Prometheus metrics",
            "operations",
            {
                "200": {
                    "description": "Prometheus text exposition",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        ),
        PlainEndpoint(
            "GET",
            "/openapi.json",
            openapi,
            "This OpenAPI 3.1 document",
            "operations",
            {"200": _json({"type": "object"}, "the OpenAPI document")},
        ),
    ]
