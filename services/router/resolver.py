"""Upstream name resolution that a resolver which never answers cannot turn into an outage.

`loop.getaddrinfo` runs the blocking `socket.getaddrinfo` on the event loop's default thread
pool (a handful of threads). A name whose DNS servers never answer holds one thread per lookup
for as long as the system resolver keeps retrying, whatever timeout the caller awaits with: a
few calls to such a name take every thread, and then no other name resolves, for any user.

`ThreadedResolver` resolves on threads of its own (`max_threads`), and lets **one** lookup per
(host, port) run at a time: calls for a name already being looked up wait for that lookup
instead of starting another. So a hung name holds at most one thread, however many calls ask
for it, and the caller's timeout (`EgressNetworkBackend`, `ROUTER_RESOLVE_TIMEOUT`) still
bounds every call. What it does not bound: many *different* names that all hang, each holding
one thread, until the system resolver gives up on them.

Pure asyncio and `socket`: no grpc, no HTTP library.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

Lookup = Callable[[str, int], Sequence[str]]
"""A blocking lookup: (host, port) -> IP address strings; OSError when the name does not
resolve."""


def getaddrinfo_addresses(host: str, port: int) -> list[str]:
    """The operating system's answer for `host` (getaddrinfo), in its order, de-duplicated."""
    seen: dict[str, None] = {}
    for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        seen.setdefault(str(info[4][0]), None)
    return list(seen)


class ThreadedResolver:
    """An async resolver (`services.router.egress.Resolver`) on a bounded pool of its own
    threads, one lookup at a time per name."""

    def __init__(self, lookup: Lookup = getaddrinfo_addresses, *, max_threads: int = 16) -> None:
        self._lookup = lookup
        self._executor = ThreadPoolExecutor(max_threads, thread_name_prefix="aicreds-resolve")
        self._running: dict[tuple[str, int], asyncio.Future[Sequence[str]]] = {}

    def __repr__(self) -> str:
        return f"ThreadedResolver(running={len(self._running)})"

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        key = (host, port)
        lookup = self._running.get(key)
        if lookup is None:
            loop = asyncio.get_running_loop()
            lookup = loop.run_in_executor(self._executor, self._lookup, host, port)
            self._running[key] = lookup
            lookup.add_done_callback(lambda done: self._finished(key, done))
        # Shielded: a caller that gives up (its timeout) leaves the lookup to the others.
        return await asyncio.shield(lookup)

    def _finished(self, key: tuple[str, int], done: asyncio.Future[Sequence[str]]) -> None:
        if self._running.get(key) is done:
            del self._running[key]
        if not done.cancelled():
            done.exception()  # retrieved: every caller may have given up already

    def close(self) -> None:
        """Stop taking lookups; queued ones are dropped, running ones end on their own."""
        self._executor.shutdown(wait=False, cancel_futures=True)
