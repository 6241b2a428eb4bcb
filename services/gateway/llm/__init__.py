"""The OpenAI- and Anthropic-compatible model endpoints (SPEC 2.6; issue 6).

`endpoints(gateway)` returns the `PlainEndpoint`s the application mounts (and documents in
`/openapi.json`). Each handler should:

- admit the request with `await gateway.gate.admit(request, scope="llm:invoke",
  allow_session=False)`; it raises `ApiError` (401/403/429 with the headers to send) which the
  handler renders in the vendor's error shape, adding `err.headers`;
- add `admission.headers` (rate limit, X-Debug-Auth) to its response;
- read the body with `services.gateway.rest.read_body(request, limit)` and call the router
  through `gateway.router.stub` with `timeout=gateway.router.timeout` and
  `metadata=gateway.router.metadata()`, mapping an `AioRpcError` with
  `services.gateway.errors.from_rpc_error(err, "router")`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.gateway.rest import PlainEndpoint

if TYPE_CHECKING:
    from services.gateway.app import Gateway


def endpoints(gateway: Gateway) -> list[PlainEndpoint]:
    """The model endpoints; none until issue 6 adds them."""
    return []
