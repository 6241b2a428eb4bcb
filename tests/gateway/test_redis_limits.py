"""The Redis token bucket (`redis_limits.py`) against a real Redis: the script's arithmetic,
atomicity under concurrency, one budget for several gateways, and a Redis that is not there."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from services.gateway.rate_limit import InMemoryRateLimiter
from services.gateway.redis_limits import (
    RateLimitStoreUnavailable,
    RedisRateLimiter,
    open_redis,
)
from services.gateway.redis_url import RedisUrl
from tests.support.redis import REDIS_URL, fresh_redis
from tests.support.stack import unused_address


@pytest.fixture
async def redis() -> AsyncIterator[tuple[Redis, str]]:
    async with fresh_redis("limits") as found:
        yield found


def limiter(redis: tuple[Redis, str], rate: float, burst: int, name: str = "t") -> RedisRateLimiter:
    client, prefix = redis
    return RedisRateLimiter(client, name, rate, burst, prefix=prefix)


async def test_burst_then_refused_with_the_in_memory_headers(redis: tuple[Redis, str]) -> None:
    shared = limiter(redis, rate=2.0, burst=3)
    decisions = [await shared.hit("tok_a") for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    refused = decisions[-1].headers()
    assert refused["X-RateLimit-Limit"] == "3"
    assert refused["Retry-After"] == "1"  # about half a second at 2/s, rounded up
    assert refused["X-RateLimit-Reset"] == "2"  # 3 tokens at 2/s to be full again
    assert 0 < decisions[-1].retry_after <= 0.5
    assert "Retry-After" not in decisions[0].headers()


async def test_refill_after_retry_after_allows_again(redis: tuple[Redis, str]) -> None:
    shared = limiter(redis, rate=20.0, burst=1)
    assert (await shared.hit("k")).allowed
    refused = await shared.hit("k")
    assert not refused.allowed
    await asyncio.sleep(refused.retry_after + 0.01)
    assert (await shared.hit("k")).allowed


async def test_refill_never_exceeds_burst(redis: tuple[Redis, str]) -> None:
    shared = limiter(redis, rate=100.0, burst=2)
    await shared.hit("k")
    await shared.hit("k")
    await asyncio.sleep(0.2)  # 20 tokens' worth of time
    assert (await shared.hit("k")).remaining == 1


async def test_same_decisions_as_the_in_memory_limiter(redis: tuple[Redis, str]) -> None:
    """One sequence of hits and pauses on both: the same allowed/remaining at every step. The
    pauses put the bucket half-way between whole tokens, so real time's jitter changes
    nothing."""
    rate, burst = 10.0, 3
    shared, local = limiter(redis, rate, burst), InMemoryRateLimiter(rate, burst)
    # Hits, and pauses (seconds) between them.
    steps: list[str | float] = ["hit"] * 4 + [0.15] + ["hit"] * 2 + [0.05] + ["hit"] * 2
    steps += [1.0] + ["hit"] * 5
    compared = 0
    for step in steps:
        if isinstance(step, float):
            await asyncio.sleep(step)
            continue
        ours, theirs = await shared.hit("k"), await local.hit("k")
        assert (ours.allowed, ours.remaining, ours.limit) == (
            theirs.allowed,
            theirs.remaining,
            theirs.limit,
        ), f"step {compared}"
        assert ours.reset_after == pytest.approx(theirs.reset_after, abs=0.05)
        assert ours.retry_after == pytest.approx(theirs.retry_after, abs=0.05)
        compared += 1
    assert compared == 13


async def test_buckets_are_per_key_and_peek_takes_and_writes_nothing(
    redis: tuple[Redis, str],
) -> None:
    client, prefix = redis
    shared = limiter(redis, rate=0.001, burst=1)
    assert (await shared.peek("a")).allowed
    assert await client.exists(f"{prefix}:rl:t:a") == 0
    assert (await shared.hit("a")).allowed
    assert not (await shared.peek("a")).allowed
    assert not (await shared.hit("a")).allowed
    assert (await shared.hit("b")).allowed


async def test_limiters_of_different_names_do_not_share_buckets(
    redis: tuple[Redis, str],
) -> None:
    tokens, users = limiter(redis, 0.001, 1, "token"), limiter(redis, 0.001, 1, "user")
    assert (await tokens.hit("same")).allowed
    assert (await users.hit("same")).allowed
    assert not (await tokens.hit("same")).allowed


async def test_an_idle_bucket_expires_when_it_would_be_full(redis: tuple[Redis, str]) -> None:
    client, prefix = redis
    shared = limiter(redis, rate=4.0, burst=2)
    await shared.hit("idle")
    await shared.hit("idle")
    # Two tokens at 4/s: full after 0.5 s; the key lives that long plus a second.
    ttl = await client.pttl(f"{prefix}:rl:t:idle")
    assert 1000 < ttl <= 1500
    assert (await client.hgetall(f"{prefix}:rl:t:idle")).keys() == {b"tokens", b"updated"}


async def test_many_concurrent_hits_never_overshoot_the_burst(redis: tuple[Redis, str]) -> None:
    shared = limiter(redis, rate=0.001, burst=50)
    decisions = await asyncio.gather(*(shared.hit("hot") for _ in range(200)))
    assert sum(d.allowed for d in decisions) == 50
    assert sorted(d.remaining for d in decisions if d.allowed) == list(range(50))


async def test_two_gateways_share_one_budget(redis: tuple[Redis, str]) -> None:
    """Two clients (two connection pools, as two gateways have) hitting one bucket at once."""
    _, prefix = redis
    gateways = [open_redis(REDIS_URL), open_redis(REDIS_URL)]
    try:
        limiters = [RedisRateLimiter(g, "token", 0.001, 30, prefix=prefix) for g in gateways]
        decisions = await asyncio.gather(*(limiters[i % 2].hit("tok_shared") for i in range(100)))
        assert sum(d.allowed for d in decisions) == 30
        assert not (await limiters[0].hit("tok_shared")).allowed
        assert not (await limiters[1].hit("tok_shared")).allowed
    finally:
        for gateway in gateways:
            await gateway.aclose()


async def test_the_script_is_loaded_again_after_a_script_flush(redis: tuple[Redis, str]) -> None:
    client, _ = redis
    shared = limiter(redis, rate=0.001, burst=2)
    assert (await shared.hit("k")).remaining == 1
    await client.script_flush()  # as a restarted Redis forgets its scripts (NOSCRIPT)
    assert (await shared.hit("k")).remaining == 0


async def test_an_unreachable_redis_fails_fast() -> None:
    client = open_redis(RedisUrl(f"redis://{unused_address()}/0"))
    try:
        shared = RedisRateLimiter(client, "t", 1.0, 1)
        started = time.monotonic()
        with pytest.raises(RateLimitStoreUnavailable):
            await shared.hit("k")
        assert time.monotonic() - started < 1.0
    finally:
        await client.aclose()


def test_bad_parameters_are_refused() -> None:
    client = open_redis(REDIS_URL)
    with pytest.raises(ValueError):
        RedisRateLimiter(client, "t", 0, 1)
    with pytest.raises(ValueError):
        RedisRateLimiter(client, "t", 1, 0)
