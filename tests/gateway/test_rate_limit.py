"""The in-memory token bucket (pure)."""

from __future__ import annotations

import pytest

from services.gateway.rate_limit import InMemoryRateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_burst_then_refused_with_retry_after() -> None:
    clock = Clock()
    limiter = InMemoryRateLimiter(rate=2.0, burst=3, clock=clock)
    decisions = [await limiter.hit("tok_a") for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    refused = decisions[-1].headers()
    assert refused["X-RateLimit-Limit"] == "3"
    assert refused["Retry-After"] == "1"  # half a second at 2/s, rounded up
    assert refused["X-RateLimit-Reset"] == "2"  # 3 tokens at 2/s to be full again
    assert "Retry-After" not in decisions[0].headers()


async def test_refill_after_retry_after_allows_again() -> None:
    clock = Clock()
    limiter = InMemoryRateLimiter(rate=1.0, burst=1, clock=clock)
    assert (await limiter.hit("k")).allowed
    refused = await limiter.hit("k")
    assert not refused.allowed
    clock.now += refused.retry_after
    assert (await limiter.hit("k")).allowed


async def test_buckets_are_per_key_and_peek_takes_nothing() -> None:
    limiter = InMemoryRateLimiter(rate=0.001, burst=1, clock=Clock())
    assert (await limiter.peek("a")).allowed
    assert (await limiter.peek("a")).allowed
    assert (await limiter.hit("a")).allowed
    assert not (await limiter.peek("a")).allowed
    assert (await limiter.hit("b")).allowed


async def test_refill_never_exceeds_burst() -> None:
    clock = Clock()
    limiter = InMemoryRateLimiter(rate=10.0, burst=2, clock=clock)
    await limiter.hit("k")
    clock.now += 3600
    decision = await limiter.hit("k")
    assert decision.remaining == 1


async def test_least_recently_used_keys_are_dropped() -> None:
    limiter = InMemoryRateLimiter(rate=0.001, burst=1, clock=Clock(), max_keys=2)
    for key in ("a", "b", "c"):
        await limiter.hit(key)
    # "a" was dropped, so it starts with a full bucket again; "c" is still empty.
    assert (await limiter.hit("a")).allowed
    assert not (await limiter.hit("c")).allowed


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        InMemoryRateLimiter(rate=0, burst=1)
    with pytest.raises(ValueError):
        InMemoryRateLimiter(rate=1, burst=0)
