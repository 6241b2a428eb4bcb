"""An upstream cannot set the response headers the gateway owns (`X-Debug-Auth`,
`X-Credential-Warning`, `X-RateLimit-*`, `X-Upstream-Request-Id`), through the real stack:
vault, router, gateway and an upstream that sends them, buffered and streamed. Its
`Retry-After` is relayed (the SDKs back off by it); its `X-Request-Id` becomes
`X-Upstream-Request-Id`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from services.router.headers import downstream_response_headers
from tests.gateway.conftest import StackFactory
from tests.support.fake_upstream import FakeUpstream, RecordedRequest, Reply, running_upstream
from tests.support.stack import RouterHandle, running_router
from tests.support.vault import VaultHandle

FORGED = [
    ("X-Debug-Auth", "method=forged"),
    ("X-Credential-Warning", "forged warning"),
    ("X-RateLimit-Limit", "999999"),
    ("X-RateLimit-Remaining", "999998"),
    ("X-RateLimit-Reset", "0"),
    ("X-Upstream-Request-Id", "forged-upstream-id"),
    ("X-Request-Id", "upstream-id-1"),
    ("Retry-After", "7"),
    ("x-ratelimit-remaining-requests", "42"),  # the vendor's own, differently named: relayed
]


async def _answer(request: RecordedRequest, reply: Reply) -> None:
    streamed = b'"stream": true' in request.body or b'"stream":true' in request.body
    body = b'data: {"n": 1}\n\n' if streamed else b'{"ok": true}'
    kind = "text/event-stream" if streamed else "application/json"
    await reply.head(200, [("content-type", kind), ("content-length", str(len(body))), *FORGED])
    await reply.chunk(body)
    await reply.end()


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with running_upstream(_answer) as server:
        yield server


@pytest.fixture
async def loopback_router(tmp_path: Path, vault: VaultHandle) -> AsyncIterator[RouterHandle]:
    async with running_router(tmp_path, vault, egress_allow="127.0.0.1") as running:
        yield running


def _all(response: httpx.Response, name: str) -> list[str]:
    return response.headers.get_list(name)


@pytest.mark.parametrize("stream", [False, True])
async def test_upstream_cannot_set_the_gateways_headers(
    gateway_stack: StackFactory,
    loopback_router: RouterHandle,
    upstream: FakeUpstream,
    stream: bool,
) -> None:
    stack = await gateway_stack(router_addr=loopback_router.address)
    alice = await stack.mint("alice")
    provider = {
        "name": "up",
        "kind": "openai",
        "base_url": upstream.base_url + "/v1",
        "headers": {"Authorization": ["Bearer {{credential:k}}"]},
        "models": ["m"],
    }
    saved = await stack.client.post(
        "/api/v2/users/me/ai-providers", headers=alice.bearer(), json=provider
    )
    assert saved.status_code == 201, saved.text
    await stack.client.put(
        "/api/v2/users/me/ai-credentials/k", headers=alice.bearer(), json={"value": "v"}
    )

    response = await stack.client.post(
        "/v1/chat/completions",
        headers={**alice.bearer(), "X-Debug-Auth": "true"},
        json={"model": "m", "stream": stream},
    )
    assert response.status_code == 200, response.text
    assert upstream.requests, "the upstream was called"
    (debug,) = _all(response, "x-debug-auth")
    assert "forged" not in debug and "bearer" in debug
    assert _all(response, "x-credential-warning") == []
    # One value each, the gateway's (the lower of the token's and the user's buckets).
    (limit,) = _all(response, "x-ratelimit-limit")
    (remaining,) = _all(response, "x-ratelimit-remaining")
    assert len(_all(response, "x-ratelimit-reset")) == 1
    assert int(limit) in (stack.settings.rate_burst, stack.settings.user_rate_burst)
    assert int(remaining) < int(limit)
    assert _all(response, "x-upstream-request-id") == ["upstream-id-1"]
    (request_id,) = _all(response, "x-request-id")
    assert request_id != "upstream-id-1"
    assert _all(response, "retry-after") == ["7"]
    assert _all(response, "x-ratelimit-remaining-requests") == ["42"]


def test_the_router_drops_them_for_every_caller() -> None:
    """Internal callers of the router (not only the gateway) get the same list dropped."""
    kept = downstream_response_headers(FORGED)
    assert [name.lower() for name, _ in kept] == [
        "x-request-id",
        "retry-after",
        "x-ratelimit-remaining-requests",
    ]
