"""The egress policy under every upstream connection, as an httpcore network backend.

`EgressNetworkBackend` resolves the host itself, checks **every** address with the policy
(`services/router/egress.py`) and hands only a checked address to the backend that connects
(`AsyncioBackend` by default), so a DNS answer that changes after a pre-flight check cannot get
around the policy. Resolution failures are `NameNotResolved`, an httpcore connect error, as a
connection would raise them; resolving is bounded by its own timeout (`ROUTER_RESOLVE_TIMEOUT`),
within the connect timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

import httpcore

from services.router.egress import EgressPolicy, Resolver, parse_ip, system_resolver
from services.router.errors import EgressRefused
from services.router.transport.asyncio_stream import AsyncioBackend


class NameNotResolved(httpcore.ConnectError):
    """The upstream's host name did not resolve, or not within the resolve timeout."""


class EgressNetworkBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that connects only to addresses the policy allows.

    It resolves and checks; `inner` (by default `AsyncioBackend`) connects to the checked
    address.
    """

    def __init__(
        self,
        policy: EgressPolicy,
        resolver: Resolver = system_resolver,
        inner: httpcore.AsyncNetworkBackend | None = None,
        resolve_timeout: float | None = None,
    ) -> None:
        self._policy = policy
        self._resolver = resolver
        self._resolve_timeout = resolve_timeout
        self._inner = inner if inner is not None else AsyncioBackend()

    async def addresses_for(self, host: str, port: int, timeout: float | None = None) -> list[str]:
        """Resolve `host` (within `timeout` and the resolve timeout) and check every answer;
        raises EgressRefused or NameNotResolved."""
        literal = parse_ip(host)
        if literal is not None:
            answers: Sequence[str] = [str(literal)]
        else:
            bounds = [t for t in (timeout, self._resolve_timeout) if t is not None]
            try:
                async with asyncio.timeout(min(bounds) if bounds else None):
                    answers = await self._resolver(host, port)
            except TimeoutError:
                raise NameNotResolved(f"resolving {host} timed out") from None
            except OSError:
                raise NameNotResolved(f"could not resolve {host}") from None
            if not answers:
                raise NameNotResolved(f"could not resolve {host}")
        return self._policy.check(host, answers, port)

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self.addresses_for(host, port, timeout)
        error: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as err:
                error = err
        assert error is not None
        raise error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise EgressRefused("unix sockets are not an allowed upstream")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)
