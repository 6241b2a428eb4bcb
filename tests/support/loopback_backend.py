"""A network backend for tests that connects to 127.0.0.0/8 only.

Every router a test starts connects through it, so whatever the code under test decides, no
test sends traffic to an address outside loopback: any other address is recorded and fails as
a connect error without touching the network.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterable
from typing import Any

import httpcore

from services.router.transport.asyncio_stream import AsyncioBackend

LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


class LoopbackOnlyBackend(httpcore.AsyncNetworkBackend):
    """Connects to loopback for real; records every attempt; fails every other address."""

    def __init__(self) -> None:
        self.inner = AsyncioBackend()
        self.connects: list[tuple[str, int]] = []

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.connects.append((host, port))
        try:
            outside = ipaddress.ip_address(host) not in LOOPBACK
        except ValueError:
            outside = True  # a name: the egress backend should never pass one down
        if outside:
            raise httpcore.ConnectError("test backend: not connecting outside loopback")
        return await self.inner.connect_tcp(host, port, timeout, local_address, socket_options)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
