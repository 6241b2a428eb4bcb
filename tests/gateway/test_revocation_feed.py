"""Issue 17: a revocation through one gateway bites on every gateway within a second (Redis
publish/subscribe), and a gateway without Redis falls back to its cache TTL and says so.

Every gateway here caches authentications for 60 s, so only the feed (or its cache drop on
reconnecting) can explain a refusal within a few seconds. Each test has a channel of its own on
the shared test server; the outage test reaches Redis through a proxy it cuts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from http.cookies import SimpleCookie

import pytest
from aicreds.vault.v1 import auth_pb2, auth_pb2_grpc
from redis.asyncio import Redis

from services.gateway.auth import SECURE_SESSION_COOKIE, session_cache_key
from services.gateway.redis_url import RedisUrl
from tests.gateway.conftest import TEST_ORIGIN, Minted, Stack
from tests.support.redis import REDIS_URL, redis_proxy, require_redis, unique_prefix
from tests.support.stack import ServiceStack, unused_address

TOKENS = "/api/v2/users/me/api-tokens"
SESSIONS = "/api/v2/sessions"
CREDS = "/api/v2/users/me/ai-credentials"
TTL = 60.0
CONNECTED = "aicreds_gateway_revocation_feed_connected"
FEED_LOGGER = "aicreds.gateway.revocations"


async def _metric(stack: Stack, name: str, labels: str = "") -> float | None:
    """The value of one sample on the gateway's /metrics (`labels` as printed, e.g.
    `outcome="ok"`), None when absent."""
    text = (await stack.client.get("/metrics")).text
    sample = name + (f"{{{labels}}}" if labels else "")
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return None


async def _until(condition: Callable[[], Awaitable[bool]], timeout: float) -> float:
    """Poll `condition` until it holds; return the seconds it took (fail after `timeout`)."""
    start = time.monotonic()
    while not await condition():
        if time.monotonic() - start > timeout:
            pytest.fail(f"condition not met within {timeout} s")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


async def _connected(*stacks: Stack, timeout: float = 5.0) -> None:
    for stack in stacks:

        async def subscribed(stack: Stack = stack) -> bool:
            return await _metric(stack, CONNECTED) == 1.0

        await _until(subscribed, timeout)


async def _gateway(services: ServiceStack, redis_url: RedisUrl, channel: str) -> Stack:
    """One more gateway on the stack's vault, following `channel`, subscribed (its rate
    limits in Redis under a prefix of the channel's, apart from other tests')."""
    stack = await services.gateway(
        redis_url=redis_url,
        redis_prefix=channel.replace("aicreds-test:", "t-"),
        revocation_channel=channel,
        auth_cache_ttl=TTL,
    )
    await _connected(stack)
    return stack


async def _pair(services: ServiceStack, redis_url: RedisUrl, channel: str) -> tuple[Stack, Stack]:
    """Gateways A and B on one vault and one feed, both subscribed."""
    return await _gateway(services, redis_url, channel), await _gateway(
        services, redis_url, channel
    )


async def _status(stack: Stack, path: str, headers: dict[str, str]) -> int:
    return (await stack.client.get(path, headers=headers)).status_code


async def _refused_within(stack: Stack, path: str, headers: dict[str, str], start: float) -> float:
    """Poll until `stack` refuses `headers`; the seconds since `start`."""

    async def refused() -> bool:
        return await _status(stack, path, headers) == 401

    await _until(refused, timeout=TTL / 4)
    return time.monotonic() - start


async def _login(stack: Stack, minted: Minted) -> str:
    response = await stack.client.post(SESSIONS, headers=minted.bearer())
    assert response.status_code == 201, response.text
    cookie: SimpleCookie = SimpleCookie()
    cookie.load(response.headers["set-cookie"])
    stack.client.cookies.clear()
    return cookie[SECURE_SESSION_COOKIE].value


def _session(secret: str) -> dict[str, str]:
    return {"Cookie": f"{SECURE_SESSION_COOKIE}={secret}"}


async def _logout(stack: Stack, secret: str) -> None:
    response = await stack.client.delete(
        f"{SESSIONS}/current", headers={**_session(secret), "Origin": TEST_ORIGIN}
    )
    assert response.json() == {"response": {"revoked": True}}


async def test_a_token_revoked_through_a_is_refused_on_b_within_a_second(
    services: ServiceStack,
) -> None:
    require_redis()
    a, b = await _pair(services, REDIS_URL, unique_prefix("revocations"))
    victim, manager = await services.mint("alice"), await services.mint("alice")
    assert await _status(b, TOKENS, victim.bearer()) == 200  # cached on B for 60 s

    start = time.monotonic()
    response = await a.client.delete(f"{TOKENS}/{victim.id}", headers=manager.bearer())
    assert response.status_code == 200
    delay = await _refused_within(b, TOKENS, victim.bearer(), start)
    assert delay < 1.0
    assert await _metric(a, "aicreds_gateway_revocations_published_total", 'outcome="ok"') == 1
    assert await _metric(b, "aicreds_gateway_revocations_received_total", 'outcome="applied"') == 1


async def test_a_session_ended_through_a_is_refused_on_b_within_a_second(
    services: ServiceStack,
) -> None:
    require_redis()
    a, b = await _pair(services, REDIS_URL, unique_prefix("revocations"))
    secret = await _login(a, await services.mint("alice"))
    assert await _status(b, CREDS, _session(secret)) == 200  # cached on B for 60 s

    start = time.monotonic()
    await _logout(a, secret)
    assert await _refused_within(b, CREDS, _session(secret), start) < 1.0


async def test_published_revocations_name_what_to_drop_and_hold_no_secret(
    services: ServiceStack, caplog: pytest.LogCaptureFixture
) -> None:
    require_redis()
    caplog.set_level(logging.DEBUG)
    channel = unique_prefix("revocations")
    a, _ = await _pair(services, REDIS_URL, channel)
    listener = Redis.from_url(REDIS_URL.url)
    pubsub = listener.pubsub()
    try:
        await pubsub.subscribe(channel)
        assert (await pubsub.get_message(timeout=2))["type"] == "subscribe"
        victim, manager = await services.mint("alice"), await services.mint("alice")
        secret = await _login(a, manager)
        assert (await a.client.delete(f"{TOKENS}/{victim.id}", headers=manager.bearer())).is_success
        await _logout(a, secret)
        received: list[bytes] = []
        deadline = time.monotonic() + 2
        while len(received) < 2 and time.monotonic() < deadline:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
            if message is not None:
                received.append(message["data"])
    finally:
        await pubsub.aclose()
        await listener.aclose()

    # The gateways' and redis-py's log lines (the test's own HTTP client logs its cookies).
    logged = "\n".join(
        f"{r.getMessage()} {r.__dict__.get('fields', '')}"
        for r in caplog.records
        if r.name.startswith(("aicreds", "redis", "uvicorn"))
    )
    assert "revocation feed subscribed" in logged  # the search below has lines to search
    for secret_value in (victim.token, manager.token, secret):
        assert not any(secret_value.encode() in data for data in received)
        assert not any(secret_value[:12].encode() in data for data in received)
        assert secret_value[:12] not in logged
    assert [json.loads(data) for data in received] == [
        {"v": 1, "user_id": "alice"},
        {"v": 1, "user_id": "alice", "session_key": session_cache_key(secret)},
    ]
    assert all(re.fullmatch(rb"[ -~]{1,200}", data) for data in received)


async def test_malformed_messages_are_ignored_counted_and_logged_once_per_kind(
    services: ServiceStack, caplog: pytest.LogCaptureFixture
) -> None:
    require_redis()
    caplog.set_level(logging.WARNING, logger=FEED_LOGGER)
    channel = unique_prefix("revocations")
    b = await _gateway(services, REDIS_URL, channel)  # the only one that logs here
    victim = await services.mint("alice")
    assert await _status(b, TOKENS, victim.bearer()) == 200  # cached on B for 60 s
    # Revoked in the vault behind the gateways' backs: only a message can drop B's answer.
    stub = auth_pb2_grpc.AuthServiceStub(services.vault.channel("gateway"))
    await stub.RevokeToken(auth_pb2.RevokeTokenRequest(user_id="alice", token_id=victim.id))

    publisher = Redis.from_url(REDIS_URL.url)
    try:
        for garbage in (
            b"not json",
            b"\xff\xfe",
            b"[1]",
            b'{"v": 2, "user_id": "alice"}',
            b'{"v": 1, "user_id": "alice", "token": "x"}',
            b'{"v": 1, "user_id": "alice", "session_key": "short"}',
            b'{"v": 1, "user_id": ""}',
            b"x" * 5000,
        ):
            await publisher.publish(channel, garbage)
        await asyncio.sleep(0.3)
        assert await _status(b, TOKENS, victim.bearer()) == 200  # nothing applied
        start = time.monotonic()
        await publisher.publish(channel, b'{"v": 1, "user_id": "alice"}')
    finally:
        await publisher.aclose()
    assert await _refused_within(b, TOKENS, victim.bearer(), start) < 1.0

    received = "aicreds_gateway_revocations_received_total"
    assert await _metric(b, received, 'outcome="not_json"') == 2
    assert await _metric(b, received, 'outcome="unknown_field"') == 1
    assert await _metric(b, received, 'outcome="too_large"') == 1
    assert await _metric(b, received, 'outcome="applied"') == 1
    kinds = [r.__dict__["fields"]["kind"] for r in caplog.records if "malformed" in r.getMessage()]
    assert sorted(kinds) == sorted(set(kinds))  # once per kind
    assert set(kinds) == {
        "not_json",
        "not_an_object",
        "unknown_version",
        "unknown_field",
        "bad_session_key",
        "bad_user_id",
        "too_large",
    }


async def test_without_redis_a_gateway_authenticates_and_says_it_falls_back(
    services: ServiceStack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=FEED_LOGGER)
    nowhere = RedisUrl(f"redis://{unused_address()}/0")
    stack = await services.gateway(redis_url=nowhere, auth_cache_ttl=TTL)
    minted = await services.mint("alice")
    assert await _status(stack, TOKENS, minted.bearer()) == 200
    response = await stack.client.delete(f"{TOKENS}/{minted.id}", headers=minted.bearer())
    assert response.status_code == 200  # the vault revoked it; the feed's failure is no error
    assert await _status(stack, TOKENS, minted.bearer()) == 401  # this replica: at once
    assert await _metric(stack, CONNECTED) == 0
    assert (
        await _metric(stack, "aicreds_gateway_revocations_published_total", 'outcome="failed"') == 1
    )
    messages = [r.getMessage() for r in caplog.records]
    assert sum("revocation feed unavailable" in m for m in messages) == 1  # at the transition
    assert any("revocation not published" in m for m in messages)


async def test_redis_down_falls_back_to_the_ttl_and_back_up_clears_the_cache_once(
    services: ServiceStack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=FEED_LOGGER)
    async with redis_proxy() as proxy:
        a, b = await _pair(services, proxy.url, unique_prefix("revocations"))
        victim, manager = await services.mint("alice"), await services.mint("alice")
        assert await _status(b, TOKENS, victim.bearer()) == 200  # cached on B for 60 s
        clears = await _metric(b, "aicreds_gateway_auth_cache_clears_total")
        caplog.clear()

        await proxy.stop()

        async def b_disconnected() -> bool:
            return await _metric(b, CONNECTED) == 0

        await _until(b_disconnected, timeout=5)
        # Authentication never depends on Redis: a token B has never seen works.
        assert await _status(b, TOKENS, (await services.mint("bob")).bearer()) == 200
        response = await a.client.delete(f"{TOKENS}/{victim.id}", headers=manager.bearer())
        assert response.status_code == 200  # revoked in the vault; the failed publish is no error
        failed = 'outcome="failed"'
        assert await _metric(a, "aicreds_gateway_revocations_published_total", failed) == 1
        assert await _status(a, TOKENS, victim.bearer()) == 401  # A itself: at once
        await asyncio.sleep(0.5)
        assert await _status(b, TOKENS, victim.bearer()) == 200  # B: only its TTL would end it
        lost = [r for r in caplog.records if "revocation feed unavailable" in r.getMessage()]
        assert [r.levelno for r in lost] == [logging.WARNING] * 2  # once each, A and B
        assert all(r.__dict__["fields"]["cache_ttl"] == TTL for r in lost)
        assert any("revocation not published" in r.getMessage() for r in caplog.records)

        await proxy.start_again()
        await _connected(a, b, timeout=10)
        # Messages may have been missed: B dropped its whole cache, once, well before the TTL.
        assert await _metric(b, "aicreds_gateway_auth_cache_clears_total") == (clears or 0) + 1
        assert await _status(b, TOKENS, victim.bearer()) == 401
        back = [r for r in caplog.records if "revocation feed subscribed" in r.getMessage()]
        assert len(back) == 2 and all(r.__dict__["fields"]["reconnected"] for r in back)

        # And the feed works again.
        other = await services.mint("alice")
        assert await _status(b, TOKENS, other.bearer()) == 200
        start = time.monotonic()
        assert (await a.client.delete(f"{TOKENS}/{other.id}", headers=other.bearer())).is_success
        assert await _refused_within(b, TOKENS, other.bearer(), start) < 1.0
