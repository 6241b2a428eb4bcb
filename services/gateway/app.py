"""The gateway's composition root: `create_app(settings)` builds the ASGI application.

It is the one place that builds the collaborators — the vault and router clients
(`clients.py`), `Admission` (authentication, rate limits, scope, Origin), the metrics — and
hands each endpoint table only what its handlers use: the REST v2 tables of `rest_api/`, the
operational endpoints of `ops_api.py`, and the model endpoints of `model_api/` (through their
`LlmBackend`). The same tables build `/openapi.json`. `middleware.py` is the one layer around
them (request id, error shapes, metrics, access log). The gRPC channels open when the
application starts and close when it stops; nothing else is kept between requests except
caches (authentication, rate limits), so any number of replicas can run side by side; with
`GATEWAY_REDIS_URL` a background task follows the revocation feed (`revocation_feed.py`) while
the application runs.

Only `server.py` imports this module.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import BaseRoute

from services.common.scopes import Scope
from services.common.tracing_setup import start_tracing
from services.gateway.admission import Admission
from services.gateway.auth import Authenticator, session_cookie_name
from services.gateway.call_slots import CallSlots, held_for_the_answer
from services.gateway.clients import RouterClient, VaultClient
from services.gateway.endpoint_table import Endpoint, PlainEndpoint, rest_route
from services.gateway.limit_fallback import gateway_limits
from services.gateway.middleware import GatewayApplication
from services.gateway.model_api.endpoints import model_endpoints
from services.gateway.model_api.model_call import LlmBackend, LlmPrincipal
from services.gateway.observability import Metrics, RevocationFeedMetrics
from services.gateway.openapi import build_openapi
from services.gateway.ops_api import endpoints as ops_endpoints
from services.gateway.rate_limit import RateLimiter
from services.gateway.rest_api import (
    activity,
    credential_hosts,
    credentials,
    provider_checks,
    providers,
    sessions,
    tokens,
    usage,
)
from services.gateway.revocation_feed import RedisRevocationFeed
from services.gateway.revocations import Revocations
from services.gateway.settings import GatewaySettings
from services.gateway.web_ui import ui_routes


def _version() -> str:
    try:
        return package_version("aicreds")
    except PackageNotFoundError:
        return "0.0.0"


def rest_endpoints(
    settings: GatewaySettings,
    vault: VaultClient,
    router: RouterClient,
    revocations: Revocations,
) -> list[Endpoint]:
    """The REST v2 tables, each with the collaborators its handlers use."""
    return [
        *credentials.endpoints(vault),
        *credential_hosts.endpoints(vault),
        *providers.endpoints(vault, router),
        *provider_checks.endpoints(router),
        *activity.endpoints(vault),
        *usage.endpoints(vault),
        *tokens.endpoints(vault, revocations),
        *sessions.endpoints(
            vault,
            revocations,
            session_ttl=settings.session_ttl,
            cookie_secure=settings.cookie_secure,
        ),
    ]


def model_backend(
    settings: GatewaySettings,
    admission: Admission,
    vault: VaultClient,
    router: RouterClient,
    call_slots: CallSlots,
) -> LlmBackend:
    """What the model endpoints use: admission with `llm:invoke` (API tokens only) and a slot
    of the user's concurrent calls, the router's stub, the vault's provider list and the
    limits."""

    async def authenticate(request: Request) -> LlmPrincipal:
        admitted = await admission.admit(request, scope=Scope.LLM_INVOKE, allow_session=False)
        call_slots.hold(request, admitted.principal.user_id)
        return LlmPrincipal(admitted.principal.user_id, admitted.headers)

    return LlmBackend(
        authenticate=authenticate,
        invoke_stream=router.invoke_stream,
        invoke_buffered=router.invoke_buffered,
        list_providers=vault.list_providers,
        router_timeout=settings.router_timeout,
        max_body=settings.llm_max_body,
    )


def create_app(
    settings: GatewaySettings,
    *,
    token_limiter: RateLimiter | None = None,
    address_limiter: RateLimiter | None = None,
    user_limiter: RateLimiter | None = None,
) -> Starlette:
    """The ASGI application. Limiters default to the settings' (`limit_fallback.py`).

    `app.state.rest_endpoints` is the REST v2 table it serves (what tests iterate over).
    """
    metrics = Metrics()
    tracing = start_tracing(settings.tracing)  # a tracer when OTEL_EXPORTER_OTLP_* is set
    vault = VaultClient(
        settings.vault_addr, settings.vault_token_file, settings.vault_tls, settings.vault_timeout
    )
    router = RouterClient(
        settings.router_addr,
        settings.router_token_file,
        settings.router_tls,
        settings.router_timeout,
    )
    authenticator = Authenticator(vault, cache_ttl=settings.auth_cache_ttl)
    limits = gateway_limits(settings, metrics)
    # With Redis, revocations reach the other replicas at once (revocation_feed.py).
    feed = None
    if settings.redis_url is not None:
        feed = RedisRevocationFeed(
            settings.redis_url.url,
            settings.revocation_channel,
            authenticator,
            RevocationFeedMetrics(metrics.registry),
            cache_ttl=settings.auth_cache_ttl,
        )
    revocations = Revocations(authenticator, feed)
    admission = Admission(
        authenticator=authenticator,
        token_limiter=token_limiter or limits.token,
        address_limiter=address_limiter or limits.address,
        origin=settings.origin,
        metrics=metrics,
        cookie_secure=settings.cookie_secure,
        user_limiter=user_limiter or limits.user,
    )
    call_slots = CallSlots(settings.user_max_concurrent_calls)

    rest: Sequence[Endpoint] = rest_endpoints(settings, vault, router, revocations)
    openapi_document: dict[str, Any] = {}
    plain: list[PlainEndpoint] = [
        *ops_endpoints(
            vault=vault, router=router, metrics=metrics, openapi_document=lambda: openapi_document
        ),
        *held_for_the_answer(
            model_endpoints(model_backend(settings, admission, vault, router, call_slots))
        ),
    ]
    openapi_document.update(
        build_openapi(
            rest,
            plain,
            version=_version(),
            session_cookie=session_cookie_name(settings.cookie_secure),
        )
    )
    # Routes of three kinds (REST, plain, UI).
    routes: list[BaseRoute] = [rest_route(e, admission, settings.max_body) for e in rest]
    routes += [endpoint.route() for endpoint in plain]
    routes += ui_routes()  # the browser UI under /ui/ (SPEC 2.8), after every API route

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await vault.open()
        await router.open()
        try:
            if feed is None:
                yield
            else:
                async with feed.running():
                    yield
        finally:
            await vault.close()
            await router.close()
            await limits.close()
            await tracing.shutdown()

    app = GatewayApplication(
        metrics=metrics, tracer=tracing.tracer, routes=routes, lifespan=lifespan
    )
    app.state.rest_endpoints = tuple(rest)
    app.state.tracing = tracing  # tests flush it
    return app
