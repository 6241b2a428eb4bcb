"""The revocation feed: Redis publish/subscribe between the gateway replicas.

`RedisRevocationFeed.publish` puts a `Revocation` (`revocations.py`) on the channel; `running()`
keeps a background task subscribed to it that applies every replica's revocations to this
replica's `Authenticator`, so a revoked token or ended session stops everywhere within the
publish/subscribe delay instead of the cache TTL.

Redis is never on the authentication path. When it is unreachable:

- a publish fails quietly (a warning and `aicreds_gateway_revocations_published_total{outcome=
  "failed"}`): the vault has revoked already and the other replicas catch up within their TTL;
- the subscriber says so once, at the transition (a warning and
  `aicreds_gateway_revocation_feed_connected` 0): this replica falls back to the cache TTL; it
  reconnects with exponential backoff, and on each subscription drops its whole authentication
  cache, since revocations published meanwhile were missed (it only costs vault calls).

A connection that goes silent (no reply to a PING within `silence_timeout`) counts as lost.
Malformed messages are counted by kind and logged once per kind. Neither the Redis URL (it may
hold a password) nor an error's text is logged: only its type.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from services.gateway.auth import Authenticator
from services.gateway.observability import RevocationFeedMetrics
from services.gateway.revocations import MalformedRevocation, Revocation, decode_revocation

log = logging.getLogger("aicreds.gateway.revocations")


class FeedSilent(Exception):
    """The subscription's connection stopped answering (no reply to a PING in time)."""


#: What "Redis is unreachable" looks like from redis-py: the one table of its errors here.
FEED_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, FeedSilent)


class RedisRevocationFeed:
    """Publishes this replica's revocations on `channel` and applies everyone's to
    `authenticator`. `cache_ttl` is only for the log line that says what the fallback is."""

    def __init__(
        self,
        url: str,
        channel: str,
        authenticator: Authenticator,
        metrics: RevocationFeedMetrics,
        *,
        cache_ttl: float,
        timeout: float = 1.0,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        ping_interval: float = 5.0,
    ) -> None:
        # No retries inside redis-py: a failure surfaces at once, and the subscriber's own loop
        # (with backoff, the metric and the log line) is the one place that reconnects.
        self._redis: Redis = Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )
        self._channel = channel
        self._authenticator = authenticator
        self._metrics = metrics
        self._cache_ttl = cache_ttl
        self._timeout = timeout
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._ping_interval = ping_interval
        self._connected: bool | None = None  # None until the first attempt
        self._reported: set[MalformedRevocation] = set()

    def __repr__(self) -> str:
        return f"RedisRevocationFeed(channel={self._channel!r}, connected={self._connected})"

    async def publish(self, revocation: Revocation) -> None:
        """Tell the other replicas; never raises."""
        try:
            await self._redis.publish(self._channel, revocation.encode())
        except FEED_ERRORS as err:
            self._metrics.published.labels(outcome="failed").inc()
            log.warning(
                "revocation not published: other gateways drop it within their cache TTL",
                extra={"fields": {"error": type(err).__name__, "cache_ttl": self._cache_ttl}},
            )
            return
        self._metrics.published.labels(outcome="ok").inc()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Follow the channel in a background task for the duration of the block."""
        task = asyncio.create_task(self._follow(), name="revocation-feed")
        try:
            yield
        finally:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
            await self._redis.aclose()

    async def _follow(self) -> None:
        loop = asyncio.get_running_loop()
        delay = self._backoff_initial
        while True:
            subscribed_at: float | None = None
            try:
                async with self._redis.pubsub() as pubsub:
                    await self._subscribe(pubsub)
                    subscribed_at = loop.time()
                    await self._listen(pubsub)
            except FEED_ERRORS as err:
                self._lost(err)
            # The backoff starts over only after a subscription that lasted: one that keeps
            # dropping (a flapping proxy, a subscriber Redis cuts off) would otherwise clear the
            # authentication cache, and send every client to the vault, at every short delay.
            if subscribed_at is not None and loop.time() - subscribed_at > self._backoff_max:
                delay = self._backoff_initial
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, self._backoff_max)

    async def _subscribe(self, pubsub: PubSub) -> None:
        await pubsub.subscribe(self._channel)
        confirmation = await pubsub.get_message(timeout=self._timeout)
        if confirmation is None or confirmation.get("type") != "subscribe":
            raise FeedSilent
        # From here on every revocation is heard; any published before may have been missed.
        dropped = self._authenticator.forget_all()
        self._metrics.cache_clears.inc()
        self._metrics.connected.set(1)
        was = self._connected
        self._connected = True
        log.log(
            logging.INFO if was is None else logging.WARNING,
            "revocation feed subscribed: revocations from other gateways apply at once;"
            " dropped the authentication cache, in case some were missed",
            extra={"fields": {"dropped": dropped, "reconnected": was is False}},
        )

    async def _listen(self, pubsub: PubSub) -> None:
        loop = asyncio.get_running_loop()
        last_heard = loop.time()
        pinged_at: float | None = None
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            now = loop.time()
            if message is not None:
                last_heard, pinged_at = now, None
                if message.get("type") == "message":
                    self._receive(message.get("data"))
            elif pinged_at is not None:
                if now - pinged_at > self._timeout:
                    raise FeedSilent
            elif now - last_heard >= self._ping_interval:
                await pubsub.ping()
                pinged_at = now

    def _receive(self, data: Any) -> None:
        decoded = (
            decode_revocation(data) if isinstance(data, bytes) else MalformedRevocation.NOT_JSON
        )
        if isinstance(decoded, Revocation):
            decoded.apply_to(self._authenticator)
            self._metrics.received.labels(outcome="applied").inc()
            return
        self._metrics.received.labels(outcome=decoded.value).inc()
        if decoded not in self._reported:  # once per kind: a flood cannot flood the log
            self._reported.add(decoded)
            log.warning(
                "malformed revocation message ignored (further ones of this kind only counted)",
                extra={"fields": {"kind": decoded.value}},
            )

    def _lost(self, err: BaseException) -> None:
        if self._connected is False:
            log.debug("revocation feed still unreachable", extra={"fields": {"error": _name(err)}})
            return
        self._connected = False
        self._metrics.connected.set(0)
        log.warning(
            "revocation feed unavailable: revocations through other gateways now take up to"
            " the authentication cache TTL here; reconnecting",
            extra={"fields": {"error": _name(err), "cache_ttl": self._cache_ttl}},
        )


def _name(err: BaseException) -> str:
    return type(err).__name__
