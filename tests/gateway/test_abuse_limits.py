"""Abuse resistance: failed authentications, per-user rates and concurrent calls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from services.gateway.call_slots import CallSlots, held_for_the_answer
from services.gateway.client_address import address_key
from services.gateway.endpoint_table import PlainEndpoint
from services.gateway.errors import ApiError
from services.gateway.settings import GatewaySettings
from tests.support.asgi import serve_asgi
from tests.support.stack import StackFactory

CREDS = "/api/v2/users/me/ai-credentials"


def test_ipv6_addresses_count_by_their_64() -> None:
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:ffff::9")
    assert address_key("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert address_key("192.0.2.7") != address_key("192.0.2.8")
    assert address_key("testclient") == "testclient"


async def test_bad_credentials_from_a_shared_address_do_not_lock_out_a_valid_token(
    gateway_stack: StackFactory,
) -> None:
    stack = await gateway_stack(auth_fail_rate=0.01, auth_fail_burst=3, auth_cache_ttl=0.05)
    good = await stack.mint("alice")
    assert (await stack.client.get(CREDS, headers=good.bearer())).status_code == 200
    garbage = [f"sk-aic-{i:043d}" for i in range(5)] + ["Basic nonsense"]
    statuses = []
    for value in garbage:
        header = {"Authorization": value} if " " in value else {"x-api-key": value}
        statuses.append((await stack.client.get(CREDS, headers=header)).status_code)
    assert statuses == [401, 401, 401, 429, 429, 429]
    await asyncio.sleep(0.1)  # the valid token's cache entry has expired
    for _ in range(3):
        assert (await stack.client.get(CREDS, headers=good.bearer())).status_code == 200
    # The bad client is still throttled.
    assert (await stack.client.get(CREDS, headers={"x-api-key": garbage[0]})).status_code == 429


async def test_a_user_gets_the_user_rate_however_many_tokens(gateway_stack: StackFactory) -> None:
    stack = await gateway_stack(
        rate_limit=0.01, rate_burst=4, user_rate_limit=0.01, user_rate_burst=4
    )
    tokens = [await stack.mint("alice") for _ in range(3)]
    statuses = [
        (await stack.client.get(CREDS, headers=tokens[i % 3].bearer())).status_code
        for i in range(8)
    ]
    assert statuses == [200] * 4 + [429] * 4
    refused = await stack.client.get(CREDS, headers=tokens[2].bearer())
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.headers["X-RateLimit-Limit"] == "4"
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    bob = await stack.mint("bob")
    assert (await stack.client.get(CREDS, headers=bob.bearer())).status_code == 200


def test_user_limit_settings() -> None:
    settings = GatewaySettings.from_env(
        {
            "GATEWAY_USER_RATE_LIMIT": "5",
            "GATEWAY_USER_RATE_BURST": "6",
            "GATEWAY_USER_MAX_CONCURRENT_CALLS": "7",
            "GATEWAY_FORWARDED_ALLOW_IPS": "10.0.0.0/8",
        }
    )
    assert (settings.user_rate_limit, settings.user_rate_burst) == (5.0, 6)
    assert settings.user_max_concurrent_calls == 7
    assert settings.forwarded_allow_ips == "10.0.0.0/8"
    with pytest.raises(ValueError, match="GATEWAY_USER_MAX_CONCURRENT_CALLS"):
        GatewaySettings.from_env({"GATEWAY_USER_MAX_CONCURRENT_CALLS": "0"})


def _slot_app(slots: CallSlots, release_stream: asyncio.Event) -> Starlette:
    """A model-call-like endpoint: the user from a header, a stream held until released."""

    async def handler(request: Request) -> Response:
        slots.hold(request, request.headers["x-user"])
        if request.query_params.get("fail"):
            raise ApiError(400, "invalid_argument", "bad body")

        async def chunks() -> AsyncIterator[bytes]:
            yield b"first\n"
            if request.query_params.get("hold"):
                await release_stream.wait()
            yield b"last\n"

        return StreamingResponse(chunks())

    endpoint = PlainEndpoint("GET", "/call", handler, "call", "t", {})
    (held,) = held_for_the_answer([endpoint])

    async def route(request: Request) -> Response:
        try:
            return await held.handler(request)
        except ApiError as err:
            return Response(status_code=err.status, headers=dict(err.headers))

    return Starlette(routes=[Route("/call", route)])


async def test_concurrent_calls_are_limited_per_user_and_slots_come_back() -> None:
    slots = CallSlots(limit=1)
    release = asyncio.Event()
    async with serve_asgi(_slot_app(slots, release)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            # alice holds her one slot with a stream in progress
            async with client.stream("GET", "/call?hold=1", headers={"x-user": "alice"}) as held:
                chunks = held.aiter_raw()
                assert (await chunks.__anext__()).startswith(b"first")
                refused = await client.get("/call", headers={"x-user": "alice"})
                assert refused.status_code == 429
                assert refused.headers["Retry-After"] == "1"
                assert refused.headers["X-RateLimit-Limit"] == "1"
                assert (await client.get("/call", headers={"x-user": "bob"})).status_code == 200
                release.set()
                async for _ in chunks:
                    pass
            # released when the stream ended
            assert (await client.get("/call", headers={"x-user": "alice"})).status_code == 200
            # released when the handler fails
            assert (
                await client.get("/call?fail=1", headers={"x-user": "alice"})
            ).status_code == 400
            assert slots.in_flight("alice") == 0
            # released when the client goes away mid-stream
            release.clear()
            async with client.stream("GET", "/call?hold=1", headers={"x-user": "alice"}) as gone:
                await gone.aiter_raw().__anext__()
                assert slots.in_flight("alice") == 1
        for _ in range(100):
            if slots.in_flight("alice") == 0:
                break
            await asyncio.sleep(0.05)
        assert slots.in_flight("alice") == 0
