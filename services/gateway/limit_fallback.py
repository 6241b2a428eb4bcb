"""The gateway's rate limiters, and what they do when Redis is down.

`gateway_limits(settings, metrics)` builds the three limiters admission uses (per token, per
user, failed authentications per address). Without `GATEWAY_REDIS_URL` they are in-process
buckets (`InMemoryRateLimiter`), one set per replica. With it they are shared through Redis
(`RedisRateLimiter`), each backed by an in-process limiter of the same rate and burst.

When Redis is down, rate limiting **fails open to the in-process buckets**: each gateway goes on
enforcing its own buckets, so a client's limit degrades from one budget shared by N replicas to
one per replica (at most N times the configured rate), and never disappears. The alternatives
were worse:

- failing closed (429 or 503 for every request) would make Redis, a cache of counters, a single
  point of failure for the whole API, and refuse every authenticated user to stop a few
  over-eager ones;
- failing open with no limit at all would leave the failed-authentication limiter off exactly
  when an attacker could knock Redis over to guess tokens unthrottled.

The in-process buckets start full when an outage begins (they are not kept warm while Redis
answers), so a client may get one extra burst per replica at the switch.

The switch is logged once per transition (WARNING when Redis stops answering, INFO when it
answers again), not once per request; `aicreds_gateway_rate_limit_backend{backend}` says which
store is in use and `aicreds_gateway_rate_limit_fallbacks_total` counts the checks answered
locally because of the outage. While Redis is down, one check at most every
`RETRY_INTERVAL` seconds tries it again (so a dead Redis costs one request per second its
connect timeout, not every request); the first that succeeds switches every limiter of the
gateway back to the shared buckets.

Authentication never depends on Redis: the vault answers it (`auth.py`), and only the limiters
built here hold a Redis client.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis

from services.gateway.observability import Metrics
from services.gateway.rate_limit import InMemoryRateLimiter, RateDecision, RateLimiter
from services.gateway.redis_limits import (
    REDIS_TIMEOUT,
    RateLimitStoreUnavailable,
    RedisRateLimiter,
    open_redis,
)
from services.gateway.redis_url import RedisUrl
from services.gateway.settings import GatewaySettings

#: Seconds between attempts to reach Redis again while it is down.
RETRY_INTERVAL = 1.0
#: The most one check waits for Redis in all (a pooled connection, connecting, the answer).
CHECK_BUDGET = REDIS_TIMEOUT + 0.1

_log = logging.getLogger("aicreds.gateway.rate_limit")


class RedisAvailability:
    """Whether this gateway's limiters use Redis now; shared by all of them, so that one
    outage is one log line and one metric change, whichever limiter noticed it first."""

    def __init__(
        self,
        url: RedisUrl,
        metrics: Metrics,
        *,
        retry_interval: float = RETRY_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self._metrics = metrics
        self._retry_interval = retry_interval
        self._clock = clock
        self._down = False
        self._next_attempt = 0.0
        self._show_backend()

    @property
    def down(self) -> bool:
        return self._down

    def should_try(self) -> bool:
        """Whether this check goes to Redis: always while it is up; while it is down, the first
        check after each `retry_interval` (the others stay local meanwhile)."""
        if not self._down:
            return True
        now = self._clock()
        if now < self._next_attempt:
            return False
        self._next_attempt = now + self._retry_interval
        return True

    def failed(self, err: RateLimitStoreUnavailable) -> None:
        """A check found Redis unavailable: switch to the local buckets (logged once)."""
        self._next_attempt = self._clock() + self._retry_interval
        if self._down:
            return
        self._down = True
        self._show_backend()
        _log.warning(
            "Redis is unavailable: rate limits fall back to this gateway's own buckets",
            extra={"fields": {"redis": self._url.redacted, "error": str(err)}},
        )

    def answered(self) -> None:
        """A check got Redis's answer: switch back to the shared buckets if it was down."""
        if not self._down:
            return
        self._down = False
        self._show_backend()
        _log.info(
            "Redis answers again: rate limits are shared again",
            extra={"fields": {"redis": self._url.redacted}},
        )

    def answered_locally(self) -> None:
        """A check was answered by the local buckets because Redis is unavailable."""
        self._metrics.rate_limit_fallbacks.inc()

    def _show_backend(self) -> None:
        self._metrics.rate_limit_backend.labels(backend="redis").set(0 if self._down else 1)
        self._metrics.rate_limit_backend.labels(backend="local").set(1 if self._down else 0)


class FailOpenRateLimiter:
    """Redis's buckets (`shared`) while it answers, this process's (`local`) while it does
    not; `shared` signals an outage with `RateLimitStoreUnavailable`."""

    def __init__(
        self, shared: RateLimiter, local: RateLimiter, availability: RedisAvailability
    ) -> None:
        self._shared = shared
        self._local = local
        self._availability = availability

    def __repr__(self) -> str:
        return f"FailOpenRateLimiter({self._shared!r})"

    async def hit(self, key: str) -> RateDecision:
        return await self._check(key, take=True)

    async def peek(self, key: str) -> RateDecision:
        return await self._check(key, take=False)

    async def _check(self, key: str, *, take: bool) -> RateDecision:
        if self._availability.should_try():
            try:
                # A bound on the whole check (waiting for a pooled connection included): checks
                # queued behind those that are finding Redis gone would otherwise wait out the
                # pool's own timeout on top of Redis's.
                async with asyncio.timeout(CHECK_BUDGET):
                    decision = await (self._shared.hit(key) if take else self._shared.peek(key))
            except TimeoutError:
                if not self._availability.down:  # e.g. a connect that never completes
                    self._availability.failed(RateLimitStoreUnavailable("TimeoutError"))
            except RateLimitStoreUnavailable as err:
                self._availability.failed(err)
            else:
                self._availability.answered()
                return decision
        self._availability.answered_locally()
        return await (self._local.hit(key) if take else self._local.peek(key))


@dataclass(frozen=True)
class GatewayLimits:
    """The limiters admission uses, and what must be closed when the gateway stops."""

    token: RateLimiter
    user: RateLimiter
    address: RateLimiter
    redis: Redis | None = None

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()


def gateway_limits(settings: GatewaySettings, metrics: Metrics) -> GatewayLimits:
    """In-process buckets, or Redis's with those as the fallback when `redis_url` is set."""
    rates = {
        "token": (settings.rate_limit, settings.rate_burst),
        "user": (settings.user_rate_limit, settings.user_rate_burst),
        "auth-fail": (settings.auth_fail_rate, settings.auth_fail_burst),
    }
    local = {name: InMemoryRateLimiter(rate, burst) for name, (rate, burst) in rates.items()}
    if settings.redis_url is None:
        metrics.rate_limit_backend.labels(backend="local").set(1)
        return GatewayLimits(local["token"], local["user"], local["auth-fail"])
    client = open_redis(settings.redis_url)
    availability = RedisAvailability(settings.redis_url, metrics)
    limiters = {
        name: FailOpenRateLimiter(
            RedisRateLimiter(client, name, rate, burst, prefix=settings.redis_prefix),
            local[name],
            availability,
        )
        for name, (rate, burst) in rates.items()
    }
    return GatewayLimits(limiters["token"], limiters["user"], limiters["auth-fail"], client)
