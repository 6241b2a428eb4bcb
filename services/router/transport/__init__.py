"""The router's hand-written HTTP transport: how a prepared call reaches the upstream.

| module | what |
|---|---|
| `client.py` | `UpstreamClient.stream`: one request, its response streamed back |
| `target.py` | `UpstreamTarget`: a URL parsed once into origin, `Host` and request target |
| `pool.py` | `ConnectionPool`: httpcore HTTP/1.1 connections per origin |
| `egress_backend.py` | the egress policy under every connection (resolve, check, connect) |
| `asyncio_stream.py` | an httpcore network backend on plain asyncio (uvloop) transports |
| `errors.py` | the one table that maps httpcore's and httpx's errors to the router's |

**Why it exists.** The router used httpx's `AsyncClient` over httpcore's pool and anyio
backend. Profiled under `make bench` (issue 8), those layers, not the router's own work, were
most of its CPU per call: httpcore's pool walked and polled every idle connection on each
request and each response close (O(n^2) in the pool size), httpx's client layers (cookies,
auth, redirects, URL and header merging) decided nothing for the router, and anyio entered
cancel scopes and yielded to the loop on every read, write and lock. Measured, client CPU per
call of `UpstreamClient.stream` against `bench/fake_upstream.py` on uvloop: httpx's client
472-495 µs at c=1 and 1009-1173 µs at c=64; this pool on httpcore connections 265 and 284 µs
(commit 2186d19); then this asyncio backend instead of anyio's, 255-293 -> 154-178 µs (commit
1ca3ab4). Under `make bench` the pool alone took the router's CPU per call at gateway c=64 from
3.24 to 1.67 ms and its throughput from 227 to 387 req/s (`bench/README.md` has the latest run).

**What it costs.** httpcore is used below its public client API: `pool.py` subclasses
`httpcore.AsyncHTTP11Connection` and overrides its private `_state_lock` (an anyio lock) with an
asyncio one, so `httpcore==1.0.9` is pinned in `pyproject.toml` (the version httpx 0.28.1
brings); a release that renames it makes the override inert, not wrong. We own what httpx did
for us: default headers, URL parsing (`target.py` keeps httpx.URL's results, and a test checks
it), TLS context, timeouts and error mapping.

**When to delete it.** When httpcore's pool checks only the connection it hands out and
httpcore gains a native asyncio backend (or anyio's per-operation cost disappears), or when
`make bench` no longer shows a gain for this package over `httpx.AsyncClient` with the egress
backend under it. Then the router sends through httpx again; `egress_backend.py` stays (as
httpx's network backend), `errors.py` shrinks to httpx's errors, the rest goes.
"""

import httpcore

from services.router.transport.client import UpstreamClient, UpstreamRequest, UpstreamResponse
from services.router.transport.errors import base_url_errors, checked_base_url_errors
from services.router.transport.target import UpstreamTarget, base_url_host_port

NetworkBackend = httpcore.AsyncNetworkBackend
"""What connects to a checked upstream address (`UpstreamClient(network_backend=...)`)."""

__all__ = [
    "NetworkBackend",
    "UpstreamClient",
    "UpstreamRequest",
    "UpstreamResponse",
    "UpstreamTarget",
    "base_url_errors",
    "base_url_host_port",
    "checked_base_url_errors",
]
