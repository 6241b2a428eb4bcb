"""Token-bucket rate limits behind a small interface.

`RateLimiter` is what the gateway needs from a limiter; `InMemoryRateLimiter` implements it
for one replica, `redis_limits.RedisRateLimiter` for all replicas at once (a Lua script doing
the same arithmetic in Redis), and `limit_fallback.py` chooses between them. Both turn the
tokens left in a bucket into a `RateDecision` with `bucket_decision`.

A bucket holds at most `burst` tokens and refills at `rate` tokens per second; a request
takes one. The header values follow the common `X-RateLimit-*` convention:
`Limit` is the burst, `Remaining` the whole tokens left, `Reset` the seconds until the bucket
is full again; a refused request also gets `Retry-After`, the seconds until one token is back.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class RateDecision:
    """The outcome of one check against a bucket."""

    allowed: bool
    limit: int
    remaining: int
    # Seconds until the bucket is full again.
    reset_after: float
    # Seconds until the next request would be allowed (0 when one is allowed now).
    retry_after: float

    def headers(self) -> dict[str, str]:
        """`X-RateLimit-*` (and, when refused, `Retry-After`) response headers."""
        out = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(math.ceil(self.reset_after)),
        }
        if not self.allowed:
            out["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        return out


class RateLimiter(Protocol):
    """A set of token buckets addressed by key (a token id, a client address)."""

    async def hit(self, key: str) -> RateDecision:
        """Take one token from `key`'s bucket if there is one."""
        ...

    async def peek(self, key: str) -> RateDecision:
        """Whether `key`'s bucket has a token, without taking it."""
        ...


@dataclass
class _Bucket:
    tokens: float
    updated: float


class InMemoryRateLimiter:
    """Token buckets in this process; the least recently used are dropped past `max_keys`.

    Dropping a bucket forgets its debt, so `max_keys` must exceed the number of clients active
    within one refill period (`burst / rate` seconds); the default covers 100 000.
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __repr__(self) -> str:
        return f"InMemoryRateLimiter(rate={self.rate}, burst={self.burst})"

    async def hit(self, key: str) -> RateDecision:
        return self._check(key, take=True)

    async def peek(self, key: str) -> RateDecision:
        return self._check(key, take=False)

    def _check(self, key: str, *, take: bool) -> RateDecision:
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(tokens=float(self.burst), updated=now)
            self._buckets[key] = bucket
            if len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self.rate)
            bucket.updated = now
        allowed = bucket.tokens >= 1.0
        if allowed and take:
            bucket.tokens -= 1.0
        return bucket_decision(allowed, bucket.tokens, rate=self.rate, burst=self.burst)


def bucket_decision(allowed: bool, tokens: float, *, rate: float, burst: int) -> RateDecision:
    """The decision for a bucket left with `tokens` after the check (every store's answer)."""
    missing_for_one = 0.0 if tokens >= 1.0 else (1.0 - tokens) / rate
    return RateDecision(
        allowed=allowed,
        limit=burst,
        remaining=int(math.floor(tokens)),
        reset_after=(burst - tokens) / rate,
        retry_after=0.0 if allowed else missing_for_one,
    )
