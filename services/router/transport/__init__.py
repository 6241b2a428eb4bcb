"""The router's hand-written HTTP transport: how a prepared call reaches the upstream.

| module | what |
|---|---|
| `client.py` | `UpstreamClient.stream`: one request, its response streamed back |
| `target.py` | `UpstreamTarget`: a URL parsed once into origin, `Host` and request target |
| `pool.py` | `ConnectionPool`: HTTP/1.1 connections per origin |
| `http11.py` | `HTTP11Connection`: one request at a time, answers parsed by httptools (llhttp) |
| `egress_backend.py` | the egress policy under every connection (resolve, check, connect) |
| `asyncio_stream.py` | a network backend (httpcore's interface) on asyncio (uvloop) transports |
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
Then (issue 20) `http11.py` replaced httpcore's `AsyncHTTP11Connection`, whose h11 state
machine was pure-Python work per request and per response event, and which handed on one
piece per chunked-encoding chunk: a streamed answer now leaves as one piece per socket read.

**What it costs.** We own the HTTP/1.1 client connection (framing, keep-alive, the edge cases
`tests/router/test_transport_http11.py` lists), on httptools' llhttp parser, and what httpx did
for us: default headers, URL parsing (`target.py` keeps httpx.URL's results, and a test checks
it), TLS context, timeouts and error mapping. httpcore remains for its network-backend
interface and its error types.

**When to delete it.** When `make bench` no longer shows a gain for this package over
`httpx.AsyncClient` with the egress backend under it (httpcore's pool checking only the
connection it hands out, a native asyncio backend, a parser in C). Then the router sends
through httpx again; `egress_backend.py` stays (as httpx's network backend), `errors.py`
shrinks to httpx's errors, the rest goes.
"""

from services.router.transport.asyncio_stream import NetworkBackend
from services.router.transport.client import UpstreamClient, UpstreamRequest, UpstreamResponse
from services.router.transport.errors import base_url_errors, checked_base_url_errors
from services.router.transport.target import UpstreamTarget, base_url_host_port

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
