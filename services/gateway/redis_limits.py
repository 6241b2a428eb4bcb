"""Token buckets in Redis, shared by every gateway that names the same server.

`RedisRateLimiter` implements `rate_limit.RateLimiter` with one Lua script, so one check is one
round trip and atomic however many gateways and tasks check the same bucket at once. The script
does the arithmetic of `InMemoryRateLimiter`: refill by the time elapsed × rate, capped at the
burst; take one token if there is one; answer the tokens left, which `bucket_decision` turns into
the same `RateDecision` (and so the same `429`, `Retry-After` and `X-RateLimit-*`). Time is the
Redis server's (`TIME`), so gateways whose clocks disagree still agree on a bucket.

A bucket is a hash at `<prefix>:rl:<limiter>:<key>` (the prefix is `GATEWAY_REDIS_PREFIX`,
`aicreds` by default), where the key is what admission passes
(a token id, a user id, a client address: never a credential). It expires when it would be full
again, so an idle bucket costs nothing and its absence means "full".

Every failure of the client (connection refused, timeout, an error reply) is raised as
`RateLimitStoreUnavailable`, here and nowhere else; `limit_fallback.py` decides what a check
does then. The client has short timeouts and no retries, so a Redis that refuses connections costs
nothing and one that does not answer costs the check that finds out `REDIS_TIMEOUT` (or
`CONNECT_TIMEOUT` for a new connection); meanwhile the other checks go straight to the
fallback (see `limit_fallback.py`).
"""

from __future__ import annotations

import math
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from services.gateway.rate_limit import RateDecision, bucket_decision
from services.gateway.redis_url import RedisUrl

#: How long a check waits for Redis's answer (seconds): Redis answers the script in well under
#: a millisecond; past this it is treated as down rather than holding requests up.
REDIS_TIMEOUT = 0.5
#: How long opening a connection may take (seconds). Connections are opened once and reused, so
#: this is paid rarely (at start, and by the one check per second that probes a Redis that was
#: down); it is longer than `REDIS_TIMEOUT` so that a busy gateway opening several at once does
#: not take its own slowness for an outage.
CONNECT_TIMEOUT = 1.0
#: Connections per gateway: a check holds one for a round trip, and one gateway process spends
#: more time in Python per check than Redis does, so a few keep up with it.
MAX_CONNECTIONS = 16
#: How long a check waits for a free connection (seconds): longer than `REDIS_TIMEOUT`, since a
#: queue in this process under a burst of requests says nothing about Redis.
POOL_WAIT = 1.0

# KEYS[1]: the bucket. ARGV: rate (tokens/s), burst, take (1 = hit, 0 = peek).
# Returns {allowed (1/0), tokens left (a string: a Lua number in a reply is cut to an integer)}.
# Time is kept in whole microseconds (exact in a double until the year 2255).
_TOKEN_BUCKET = """
if redis.replicate_commands then redis.replicate_commands() end
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local take = ARGV[3] == '1'
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens = tonumber(state[1])
local updated = tonumber(state[2])
if tokens == nil or updated == nil then
  tokens = burst
else
  tokens = math.min(burst, tokens + math.max(0, now - updated) / 1000000 * rate)
end
local allowed = 0
if tokens >= 1 then
  allowed = 1
  if take then tokens = tokens - 1 end
end
if take then
  redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),
             'updated', string.format('%.17g', now))
  local ttl = math.min(math.ceil((burst - tokens) / rate * 1000) + 1000, 1e12)
  redis.call('PEXPIRE', KEYS[1], string.format('%d', ttl))
end
return {allowed, string.format('%.17g', tokens)}
"""


class RateLimitStoreUnavailable(Exception):
    """The shared store did not answer a check (down, unreachable, too slow, or refusing)."""


def open_redis(url: RedisUrl) -> Redis:
    """The gateway's one client for `url`: one pool of at most `MAX_CONNECTIONS`, short
    timeouts, no retries.

    When every connection is busy a check waits for one (up to `POOL_WAIT`) rather than
    failing at once, as redis-py's default pool does past its size: a burst of concurrent
    requests is not an outage.
    """
    pool = BlockingConnectionPool.from_url(
        url.url,
        max_connections=MAX_CONNECTIONS,
        timeout=POOL_WAIT,
        socket_timeout=REDIS_TIMEOUT,
        socket_connect_timeout=CONNECT_TIMEOUT,
        retry=Retry(NoBackoff(), 0),
    )
    client: Redis = Redis.from_pool(pool)
    return client


class RedisRateLimiter:
    """Token buckets named `name` in Redis; the `rate`/`burst` must match on every gateway."""

    def __init__(
        self, client: Redis, name: str, rate: float, burst: int, *, prefix: str = "aicreds"
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = burst
        self._prefix = f"{prefix}:rl:{name}:"
        self._script = client.register_script(_TOKEN_BUCKET)

    def __repr__(self) -> str:
        return f"RedisRateLimiter({self._prefix!r}, rate={self.rate}, burst={self.burst})"

    async def hit(self, key: str) -> RateDecision:
        return await self._check(key, take=True)

    async def peek(self, key: str) -> RateDecision:
        return await self._check(key, take=False)

    async def _check(self, key: str, *, take: bool) -> RateDecision:
        try:
            # EVALSHA, and EVAL's SCRIPT LOAD once when the server does not know the script.
            reply: Any = await self._script(
                keys=[self._prefix + key], args=[repr(self.rate), self.burst, int(take)]
            )
            allowed, tokens = bool(int(reply[0])), float(reply[1])
        except (RedisError, OSError, ValueError, TypeError, IndexError) as err:
            raise RateLimitStoreUnavailable(type(err).__name__) from err
        if not math.isfinite(tokens):
            raise RateLimitStoreUnavailable("a bucket holds no number")
        return bucket_decision(allowed, tokens, rate=self.rate, burst=self.burst)
