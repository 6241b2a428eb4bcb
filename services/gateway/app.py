"""The gateway application: `create_app(settings)` builds it, `Gateway` holds its parts.

Routes come from three tables: the REST v2 `ENDPOINTS` of `routes/`, the operational
endpoints of `routes/ops.py`, and the model endpoints of `llm/`. The same tables build
`/openapi.json`. `edge.py` is the one layer around them (request id, error shapes, metrics,
access log). The gRPC channels open when the application starts and close when it stops;
nothing else is kept between requests except caches (authentication, rate limits), so any
number of replicas can run side by side.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import Any

from starlette.applications import Starlette

from services.gateway import llm
from services.gateway.auth import Authenticator
from services.gateway.backends import RouterClient, VaultClient
from services.gateway.edge import GatewayApplication
from services.gateway.gate import Gate
from services.gateway.observability import Metrics
from services.gateway.openapi import build_openapi
from services.gateway.rate_limit import InMemoryRateLimiter, RateLimiter
from services.gateway.rest import Endpoint, PlainEndpoint, rest_route
from services.gateway.routes import credentials, ops, providers, sessions, tokens
from services.gateway.settings import GatewaySettings
from services.gateway.web_ui import ui_routes

REST_ENDPOINTS: Sequence[Endpoint] = (
    *credentials.ENDPOINTS,
    *providers.ENDPOINTS,
    *tokens.ENDPOINTS,
    *sessions.ENDPOINTS,
)


class Gateway:
    """Everything a request handler may need: settings, backends, the gate, metrics."""

    def __init__(
        self,
        settings: GatewaySettings,
        *,
        token_limiter: RateLimiter | None = None,
        address_limiter: RateLimiter | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.vault = VaultClient(
            settings.vault_addr,
            settings.vault_token_file,
            settings.vault_tls,
            settings.vault_timeout,
        )
        self.router = RouterClient(
            settings.router_addr,
            settings.router_token_file,
            settings.router_tls,
            settings.router_timeout,
        )
        self.gate = Gate(
            authenticator=Authenticator(self.vault, cache_ttl=settings.auth_cache_ttl),
            token_limiter=token_limiter
            or InMemoryRateLimiter(settings.rate_limit, settings.rate_burst),
            address_limiter=address_limiter
            or InMemoryRateLimiter(settings.auth_fail_rate, settings.auth_fail_burst),
            origin=settings.origin,
            metrics=self.metrics,
            cookie_secure=settings.cookie_secure,
        )
        self.openapi_document: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"Gateway(vault={self.vault!r}, router={self.router!r})"

    async def start(self) -> None:
        await self.vault.open()
        await self.router.open()

    async def stop(self) -> None:
        await self.vault.close()
        await self.router.close()


def _version() -> str:
    try:
        return package_version("aicreds")
    except PackageNotFoundError:
        return "0.0.0"


def create_app(
    settings: GatewaySettings,
    *,
    token_limiter: RateLimiter | None = None,
    address_limiter: RateLimiter | None = None,
) -> Starlette:
    """The ASGI application. Limiters default to in-memory buckets from the settings."""
    gateway = Gateway(settings, token_limiter=token_limiter, address_limiter=address_limiter)
    plain: list[PlainEndpoint] = [*ops.endpoints(gateway), *llm.endpoints(gateway)]
    gateway.openapi_document = build_openapi(REST_ENDPOINTS, plain, version=_version())
    routes = [rest_route(endpoint, gateway) for endpoint in REST_ENDPOINTS]
    routes += [endpoint.route() for endpoint in plain]
    routes += ui_routes()  # the browser UI under /ui/ (SPEC 2.8), after every API route

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()

    app = GatewayApplication(metrics=gateway.metrics, routes=routes, lifespan=lifespan)
    app.state.gateway = gateway
    return app
