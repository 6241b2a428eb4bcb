"""Gateways sharing their rate limits through Redis (`GATEWAY_REDIS_URL`), and what they do
while Redis is away: the in-process buckets answer (`limit_fallback.py`)."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator

import pytest

from services.gateway.limit_fallback import (
    RETRY_INTERVAL,
    FailOpenRateLimiter,
    RedisAvailability,
)
from services.gateway.observability import Metrics
from services.gateway.rate_limit import InMemoryRateLimiter, RateDecision
from services.gateway.redis_limits import RateLimitStoreUnavailable, open_redis
from services.gateway.redis_url import RedisUrl
from tests.support.redis import REDIS_URL, RedisProxy, delete_keys, require_redis, unique_prefix
from tests.support.stack import Stack, StackFactory, unused_address

CREDS = "/api/v2/users/me/ai-credentials"
LOGGER = "aicreds.gateway.rate_limit"


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """The gateways' `redis_prefix`: keys of this test only, deleted after it."""
    require_redis()
    prefix = unique_prefix("gateway")
    yield prefix
    client = open_redis(REDIS_URL)
    try:
        await delete_keys(client, prefix)
    finally:
        await client.aclose()


async def status(stack: Stack, headers: dict[str, str]) -> int:
    return (await stack.client.get(CREDS, headers=headers)).status_code


def metric(text: str, sample: str) -> float:
    found = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.MULTILINE)
    assert found, sample
    return float(found.group(1))


async def test_the_token_limit_holds_across_gateways_with_the_same_headers(
    gateway_stack: StackFactory, prefix: str
) -> None:
    limits = {"rate_limit": 0.01, "rate_burst": 4, "redis_url": REDIS_URL, "redis_prefix": prefix}
    gateways = [await gateway_stack(**limits), await gateway_stack(**limits)]
    minted = await gateways[0].mint("alice")
    answers = [await gateways[i % 2].client.get(CREDS, headers=minted.bearer()) for i in range(6)]
    assert [a.status_code for a in answers] == [200] * 4 + [429] * 2
    assert [a.headers["X-RateLimit-Remaining"] for a in answers] == ["3", "2", "1", "0", "0", "0"]
    limited = answers[-1]
    assert limited.json()["error"]["code"] == "rate_limited"
    assert int(limited.headers["Retry-After"]) >= 1
    assert limited.headers["X-RateLimit-Limit"] == "4"
    assert re.fullmatch(r"\d+", limited.headers["X-RateLimit-Reset"])
    assert "Retry-After" not in answers[0].headers
    # Another token of the same user has its own bucket (the user's is larger).
    other = await gateways[1].mint("alice")
    assert await status(gateways[0], other.bearer()) == 200


async def test_failed_authentications_are_counted_across_gateways(
    gateway_stack: StackFactory, prefix: str
) -> None:
    limits = {
        "auth_fail_rate": 0.01,
        "auth_fail_burst": 3,
        "redis_url": REDIS_URL,
        "redis_prefix": prefix,
    }
    gateways = [await gateway_stack(**limits), await gateway_stack(**limits)]
    good = await gateways[0].mint("alice")
    guesses = [{"x-api-key": f"sk-aic-{i:043d}"} for i in range(5)]
    statuses = [await status(gateways[i % 2], g) for i, g in enumerate(guesses)]
    assert statuses == [401, 401, 401, 429, 429]
    # A credential that authenticates never consults the failure bucket.
    assert await status(gateways[0], good.bearer()) == 200
    assert await status(gateways[1], good.bearer()) == 200


async def test_no_credential_becomes_a_redis_key(gateway_stack: StackFactory, prefix: str) -> None:
    stack = await gateway_stack(redis_url=REDIS_URL, redis_prefix=prefix)
    minted = await stack.mint("alice")
    guess = "sk-aic-" + "7" * 43
    assert await status(stack, minted.bearer()) == 200
    assert await status(stack, minted.api_key()) == 200
    assert await status(stack, {"x-api-key": guess}) == 401
    assert await status(stack, {"Authorization": f"Bearer {guess}"}) == 401
    client = open_redis(REDIS_URL)
    try:
        keys = {key.decode() async for key in client.scan_iter(match=f"{prefix}:*")}
    finally:
        await client.aclose()
    assert keys == {
        f"{prefix}:rl:token:{minted.id}",
        f"{prefix}:rl:user:alice",
        f"{prefix}:rl:auth-fail:127.0.0.1",
    }
    for key in keys:
        assert minted.token not in key and minted.token[:12] not in key and "sk-aic" not in key


async def test_an_unreachable_redis_leaves_local_limits_and_says_so_once(
    gateway_stack: StackFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    password = "redis-password-never-logged"
    stack = await gateway_stack(
        rate_limit=0.01,
        rate_burst=3,
        redis_url=RedisUrl(f"redis://:{password}@{unused_address()}/0"),
    )
    minted = await stack.mint("alice")
    # Authentication does not need Redis; the limit is this gateway's own bucket.
    statuses = [await status(stack, minted.bearer()) for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    limited = await stack.client.get(CREDS, headers=minted.bearer())
    assert limited.headers["X-RateLimit-Limit"] == "3"
    assert int(limited.headers["Retry-After"]) >= 1
    lines = [r for r in caplog.records if r.name == LOGGER]
    assert [(r.levelno, r.getMessage()) for r in lines] == [
        (
            logging.WARNING,
            "Redis is unavailable: rate limits fall back to this gateway's own buckets",
        )
    ]
    assert password not in str(lines[0].fields)  # type: ignore[attr-defined]
    assert "***" in lines[0].fields["redis"]  # type: ignore[attr-defined]
    text = (await stack.client.get("/metrics")).text
    assert metric(text, 'aicreds_gateway_rate_limit_backend{backend="local"}') == 1
    assert metric(text, 'aicreds_gateway_rate_limit_backend{backend="redis"}') == 0
    # Every check answered locally: token and user buckets for the 3 admitted requests, the
    # token bucket alone for the 3 refused.
    assert metric(text, "aicreds_gateway_rate_limit_fallbacks_total") == 9


async def test_without_redis_the_limits_are_local(stack: Stack) -> None:
    text = (await stack.client.get("/metrics")).text
    assert metric(text, 'aicreds_gateway_rate_limit_backend{backend="local"}') == 1
    assert metric(text, "aicreds_gateway_rate_limit_fallbacks_total") == 0


async def test_shared_limits_stop_with_redis_and_resume_when_it_is_back(
    gateway_stack: StackFactory, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    proxy = await RedisProxy.start()
    try:
        limits = {
            "rate_limit": 0.01,
            "rate_burst": 2,
            "redis_url": proxy.url,
            "redis_prefix": prefix,
        }
        gateways = [await gateway_stack(**limits), await gateway_stack(**limits)]
        before, during, after = [await gateways[0].mint("alice", name=n) for n in "abc"]

        # Shared: one budget of 2 over both gateways.
        assert [await status(gateways[i % 2], before.bearer()) for i in range(4)] == [
            200,
            200,
            429,
            429,
        ]

        # Redis away: each gateway enforces its own bucket of 2.
        await proxy.stop()
        for gateway in gateways:
            assert [await status(gateway, during.bearer()) for _ in range(3)] == [200, 200, 429]
        warnings = [r for r in caplog.records if r.name == LOGGER]
        assert [r.levelno for r in warnings] == [logging.WARNING] * 2  # one per gateway

        # Redis back: within a retry interval both gateways share the budget again, and the
        # buckets Redis kept are still there.
        await proxy.start_again()
        await asyncio.sleep(RETRY_INTERVAL + 0.2)
        assert [await status(gateways[i % 2], after.bearer()) for i in range(4)] == [
            200,
            200,
            429,
            429,
        ]
        assert await status(gateways[0], before.bearer()) == 429
        lines = [r for r in caplog.records if r.name == LOGGER]
        assert [r.levelno for r in lines] == [logging.WARNING] * 2 + [logging.INFO] * 2
        for gateway in gateways:
            text = (await gateway.client.get("/metrics")).text
            assert metric(text, 'aicreds_gateway_rate_limit_backend{backend="redis"}') == 1
    finally:
        await proxy.stop()


class FlakyStore:
    """A shared store that is down or up on demand, counting the checks that reach it."""

    def __init__(self) -> None:
        self.up = True
        self.calls = 0
        self.buckets = InMemoryRateLimiter(0.001, 100)

    async def hit(self, key: str) -> RateDecision:
        self.calls += 1
        if not self.up:
            raise RateLimitStoreUnavailable("ConnectionError")
        return await self.buckets.hit(key)

    async def peek(self, key: str) -> RateDecision:
        return await self.hit(key)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_while_redis_is_down_one_check_per_interval_tries_it() -> None:
    store, clock, metrics = FlakyStore(), Clock(), Metrics()
    availability = RedisAvailability(REDIS_URL, metrics, retry_interval=1.0, clock=clock)
    limiter = FailOpenRateLimiter(store, InMemoryRateLimiter(0.001, 100), availability)
    store.up = False
    decisions = [await limiter.hit("k") for _ in range(10)]
    assert all(d.allowed for d in decisions) and decisions[-1].remaining == 90  # local bucket
    assert store.calls == 1 and availability.down
    clock.now += 0.5
    await limiter.hit("k")
    assert store.calls == 1
    clock.now += 0.5
    await limiter.hit("k")
    await limiter.hit("k")
    assert store.calls == 2  # the probe, still down; the next check stays local
    store.up = True
    clock.now += 1.0
    assert (await limiter.hit("k")).remaining == 99  # Redis's bucket again
    assert not availability.down
    await limiter.hit("k")
    assert store.calls == 4
    backend = metrics.rate_limit_backend
    assert backend.labels(backend="redis")._value.get() == 1
    assert metrics.rate_limit_fallbacks._value.get() == 13


class HangingStore(FlakyStore):
    """A Redis that accepts the connection and never answers (stopped, or a black hole)."""

    async def hit(self, key: str) -> RateDecision:
        self.calls += 1
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")


async def test_a_check_that_redis_never_answers_is_answered_locally_within_its_budget() -> None:
    store, metrics = HangingStore(), Metrics()
    availability = RedisAvailability(REDIS_URL, metrics, retry_interval=60.0)
    limiter = FailOpenRateLimiter(store, InMemoryRateLimiter(0.001, 100), availability)
    decisions = await asyncio.wait_for(
        asyncio.gather(*(limiter.hit("k") for _ in range(20))), timeout=30
    )
    # Every check waited at most its budget, then the local buckets answered; Redis is marked
    # down, so later checks do not wait at all.
    assert all(d.allowed for d in decisions) and availability.down
    assert min(d.remaining for d in decisions) == 80
    assert (await limiter.hit("k")).remaining == 79
    assert store.calls == 20
