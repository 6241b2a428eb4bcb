"""The OpenAI- and Anthropic-compatible model endpoints (SPEC 2.6; issue 6).

    endpoints.py        the PlainEndpoint table the application mounts and documents
    calls.py            one model call, OpenAI- or Anthropic-style: admit, read
                        `model`/`stream`, Invoke the router
    streaming.py        relay the router's stream as it arrives; cancel on disconnect
    model_selection.py  what is read from a body; model lists
    model_routes.py     GET /v1/models, GET /v1/models/{model_id}
    errors.py           the vendors' error shapes

`endpoints(gateway)` is what `services.gateway.app.create_app` mounts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request

from services.gateway.llm.calls import LLM_SCOPE, LlmAuthenticator, LlmBackend, LlmPrincipal
from services.gateway.llm.endpoints import llm_endpoints
from services.gateway.observability import USER_SCOPE_KEY
from services.gateway.rest import PlainEndpoint

if TYPE_CHECKING:
    from services.gateway.app import Gateway

__all__ = [
    "LlmAuthenticator",
    "LlmBackend",
    "LlmPrincipal",
    "endpoints",
    "gateway_backend",
    "llm_endpoints",
]


def gateway_backend(gateway: Gateway) -> LlmBackend:
    """The model endpoints' view of the gateway: its gate, router, vault and limits."""

    async def authenticate(request: Request) -> LlmPrincipal:
        admission = await gateway.gate.admit(request, scope=LLM_SCOPE, allow_session=False)
        request.scope[USER_SCOPE_KEY] = admission.principal.user_id
        return LlmPrincipal(admission.principal.user_id, admission.headers)

    return LlmBackend(
        authenticate=authenticate,
        router_stub=lambda: gateway.router.stub,
        list_providers=gateway.vault.list_providers,
        router_timeout=gateway.settings.router_timeout,
        max_body=gateway.settings.llm_max_body,
        request_metadata=gateway.router.metadata,
    )


def endpoints(gateway: Gateway) -> list[PlainEndpoint]:
    """The model endpoints, in the order they must be routed."""
    return llm_endpoints(gateway_backend(gateway))
