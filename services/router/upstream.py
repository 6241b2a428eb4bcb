"""The upstream HTTP client: one pooled httpx client, streaming, behind the egress policy.

`UpstreamClient.stream` sends one request and yields an `UpstreamResponse` as soon as the
upstream's head arrives; its body chunks are forwarded as they are read from the socket, never
buffered whole. The bytes are forwarded raw (still compressed if the upstream compressed them)
together with the upstream's `Content-Encoding`, so that what the caller receives is exactly
what the upstream sent. The router asks for `Accept-Encoding: identity` unless the provider's
headers say otherwise, because the caller's own Accept-Encoding is not forwarded.

Time: the whole exchange is bounded by an absolute deadline (the caller's gRPC deadline, or the
router's default); connecting is also bounded by the connect timeout. Leaving the `stream`
block early (a cancelled call) closes the upstream connection at once.

Errors: a refused or failed connection is UpstreamUnavailable, as is a connection lost
mid-response; running out of time is UpstreamTimeout; the egress policy raises EgressRefused.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.cookiejar
import ssl
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import httpcore
import httpx

from services.router.egress import EgressNetworkBackend, EgressPolicy, Resolver, system_resolver
from services.router.errors import UpstreamTimeout, UpstreamUnavailable
from services.router.headers import downstream_response_headers

_DEFAULT_HEADERS = {"accept-encoding": "identity", "user-agent": "aicreds-router"}


@dataclass(frozen=True)
class UpstreamRequest:
    """One request to send upstream (headers are already final: substituted and filtered)."""

    method: str
    url: str
    headers: Sequence[tuple[str, str]] = field(repr=False)
    body: bytes = field(default=b"", repr=False)


class UpstreamResponse:
    """The upstream's head, and its body as an async iterator of raw chunks."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code
        self.bytes_received = 0
        self.chunks_received = 0
        self.headers = downstream_response_headers(
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in response.headers.raw
        )

    def __repr__(self) -> str:
        return f"UpstreamResponse(status={self.status})"

    async def chunks(self) -> AsyncIterator[bytes]:
        """Each piece of the body as it arrives; UpstreamUnavailable if the connection drops."""
        try:
            async for chunk in self._response.aiter_raw():
                if chunk:
                    self.bytes_received += len(chunk)
                    self.chunks_received += 1
                    yield chunk
        except httpx.TransportError:
            raise UpstreamUnavailable("the upstream connection was lost mid-response") from None

    def abort(self) -> None:
        """Close the upstream connection soon, from a callback (e.g. the RPC was cancelled)."""
        if not self._response.is_closed:
            asyncio.ensure_future(self._response.aclose())


def _ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """httpx's default context (certifi's CAs), or one trusting only `ca_file`."""
    if ca_file is None:
        return httpx.create_ssl_context()
    return ssl.create_default_context(cafile=ca_file)


def _cookie_jar_that_keeps_nothing() -> http.cookiejar.CookieJar:
    """A cookie jar whose policy accepts no cookie from any domain."""
    return http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))


class UpstreamClient:
    """A pooled httpx client whose every connection passes the egress policy."""

    def __init__(
        self,
        policy: EgressPolicy,
        *,
        resolver: Resolver = system_resolver,
        connect_timeout: float = 10.0,
        network_backend: httpcore.AsyncNetworkBackend | None = None,
        ca_file: str | None = None,
        max_connections: int = 1000,
        max_keepalive: int = 100,
        keepalive_expiry: float = 60.0,
    ) -> None:
        self._connect_timeout = connect_timeout
        self.backend = EgressNetworkBackend(policy, resolver, network_backend)
        transport = httpx.AsyncHTTPTransport(trust_env=False)
        # httpx has no public hook for the network backend, so its pool is replaced by an
        # identical one that connects through the egress backend (httpx is pinned).
        transport._pool = httpcore.AsyncConnectionPool(
            ssl_context=_ssl_context(ca_file),
            max_connections=max_connections,
            max_keepalive_connections=max_keepalive,
            keepalive_expiry=keepalive_expiry,
            network_backend=self.backend,
        )
        # trust_env=False: an HTTP(S)_PROXY variable must not route around the egress policy.
        # The client is shared by every user's calls, so it must keep no cookies: a Set-Cookie
        # answered to one user would otherwise be sent on the next user's call to that host.
        self._client = httpx.AsyncClient(
            transport=transport,
            trust_env=False,
            cookies=_cookie_jar_that_keeps_nothing(),
            follow_redirects=False,
            headers=_DEFAULT_HEADERS,
            timeout=None,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def checked_addresses(self, host: str, port: int, *, deadline: float) -> list[str]:
        """The addresses a connection to `host:port` would try, resolved and checked exactly
        as a connection does it, within the connect timeout; nothing is sent.

        Raises:
            EgressRefused: the policy refuses one of them.
            httpcore.ConnectError, httpcore.ConnectTimeout: the name did not resolve (in time).
        """
        remaining = deadline - asyncio.get_running_loop().time()
        timeout = max(0.0, min(self._connect_timeout, remaining))
        return await self.backend.addresses_for(host, port, timeout)

    @contextlib.asynccontextmanager
    async def stream(
        self, request: UpstreamRequest, *, deadline: float
    ) -> AsyncIterator[UpstreamResponse]:
        """Send `request`; yield the response once its head arrived; close it on exit.

        Args:
            request: what to send.
            deadline: absolute `loop.time()` by which the whole exchange must be over.
        """
        loop = asyncio.get_running_loop()
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise UpstreamTimeout("the call's deadline passed before the upstream was called")
        connect = min(self._connect_timeout, remaining)
        timeout = httpx.Timeout(connect=connect, read=None, write=None, pool=remaining)
        outgoing = self._client.build_request(
            request.method,
            request.url,
            # Values as UTF-8 bytes: httpx would refuse (and crash on) a non-ASCII str, while
            # HTTP carries such bytes as obs-text; names are checked tokens, so ASCII.
            headers=[(n.encode("ascii"), v.encode("utf-8")) for n, v in request.headers],
            content=request.body,
            timeout=timeout,
        )
        response: httpx.Response | None = None
        try:
            async with asyncio.timeout_at(deadline):
                try:
                    response = await self._client.send(outgoing, stream=True)
                except httpx.ConnectTimeout:
                    if connect < remaining:
                        raise UpstreamUnavailable(
                            f"the upstream did not accept a connection within {connect:g} s"
                        ) from None
                    raise UpstreamTimeout("the call's deadline passed while connecting") from None
                except httpx.PoolTimeout:
                    raise UpstreamTimeout(
                        "every upstream connection of the router stayed busy until the deadline"
                    ) from None
                except httpx.TimeoutException:
                    raise UpstreamTimeout("the upstream did not answer in time") from None
                except httpx.TransportError as err:
                    raise UpstreamUnavailable(_describe(err, request.url)) from None
                yield UpstreamResponse(response)
        except TimeoutError:
            raise UpstreamTimeout(
                "the upstream did not finish before the call's deadline"
            ) from None
        finally:
            if response is not None:
                await response.aclose()


def _describe(err: httpx.TransportError, url: str) -> str:
    """A public description of a transport error (the URL holds no secret: no query)."""
    host = httpx.URL(url).host
    if isinstance(err, httpx.ConnectError):
        return f"could not connect to the upstream {host}"
    if isinstance(err, httpx.RemoteProtocolError):
        return f"the upstream {host} broke the HTTP protocol"
    return f"the connection to the upstream {host} failed"
