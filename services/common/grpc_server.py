"""Starting and stopping gRPC servers, and opening authenticated channels to them.

Every server registers standard health checking (`grpc.health.v1`) and reflection. On SIGTERM or
SIGINT it flips every service to NOT_SERVING, then stops with a grace period, so load balancers
drain it before in-flight calls are cut. A server may export its metrics (`metrics.py`) on an
HTTP address of its own, started and stopped with it.

A channel (`open_channel`) resolves every address of its target and spreads calls over them
(round robin), retrying only the RPCs that are safe to retry (`grpc_service_config`); keepalive
pings on both sides drop a replica that vanished.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common import tracing
from services.common.grpc_service_config import SERVICE_CONFIG_JSON
from services.common.request_context import REQUEST_ID_KEY, current_request_id

if TYPE_CHECKING:
    # Imported when a server exports metrics: `aicreds-admin` imports this module (through the
    # settings) and has no use for prometheus-client.
    from services.common.metrics import MetricsEndpoint, MetricsExport


@dataclass(frozen=True)
class TlsFiles:
    """Server TLS: certificate and key; a client CA turns on mutual TLS."""

    cert: Path
    key: Path
    client_ca: Path | None = None


@dataclass(frozen=True)
class ClientTls:
    """Client TLS: the CA to trust; a client certificate and key for mutual TLS."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None


@dataclass
class RunningServer:
    """A started server, its health servicer and its metrics endpoint (if it has one)."""

    server: grpc.aio.Server
    health: health.aio.HealthServicer
    port: int
    service_names: tuple[str, ...]
    metrics: MetricsEndpoint | None = None
    # Called when the drain starts, before the calls in flight get their grace: what must end
    # long-lived calls (a stream that would otherwise be held open for the whole grace, then cut).
    on_drain: list[Callable[[], None]] = field(default_factory=list)

    async def stop(self, grace: float = 5.0) -> None:
        """Flip health to NOT_SERVING, run `on_drain`, then stop, letting calls in flight finish
        for `grace` s; the metrics endpoint stops last (a scrape during the drain still answers)."""
        for name in ("", *self.service_names):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        for drain in self.on_drain:
            drain()
        try:
            await self.server.stop(grace)
        finally:
            if self.metrics is not None:
                await self.metrics.close()
                self.metrics = None


_MESSAGE_SIZES: Sequence[tuple[str, Any]] = (
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
)

_CHANNEL_OPTIONS: Sequence[tuple[str, Any]] = (
    *_MESSAGE_SIZES,
    # Round robin over every address of the target, retries where safe (grpc_service_config).
    ("grpc.service_config", SERVICE_CONFIG_JSON),
    ("grpc.enable_retries", 1),
    # A ping every 10 s, idle or not, answered within 5 s: a replica that vanished without
    # closing its connections (a killed node, a dropped route) leaves the rotation within about
    # 15 s, and its address goes with the next DNS answer. Without max_pings_without_data 0 a
    # channel stops pinging after two pings on an idle connection.
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # gRPC asks DNS again when a connection is lost; at most every 2 s rather than every 30 s.
    ("grpc.dns_min_time_between_resolutions_ms", 2_000),
    # Each channel keeps its own connections. In grpc's process-wide pool a new channel to an
    # address shares the connection state of any other channel to it, so one to a server that
    # just came up on a port an old, gone server had (tests start many on 127.0.0.1:0) could
    # inherit that connection's reconnect back-off and fail at once with UNAVAILABLE. A service
    # opens one channel per target, so nothing is lost by not sharing.
    ("grpc.use_local_subchannel_pool", 1),
)
"""Client channel arguments; `open_channel`'s `options` replace those of the same name."""

_SERVER_OPTIONS: Sequence[tuple[str, Any]] = (
    *_MESSAGE_SIZES,
    ("grpc.keepalive_time_ms", 30_000),
    # Accept the clients' keepalive pings (every 10 s, with or without calls): by default a
    # server allows one every 5 minutes and answers more with GOAWAY `too_many_pings`.
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    # DNS is asked again only when a connection is lost: ending every connection after about 5
    # minutes (gRPC adds up to 10% jitter) makes clients find replicas added since. Calls in
    # flight finish (no grace limit): a model stream is not cut; new calls take a new one.
    ("grpc.max_connection_age_ms", 300_000),
)

_NO_PROXY: Sequence[tuple[str, Any]] = (("grpc.enable_http_proxy", 0),)
"""Internal channels never go through a proxy: grpc would otherwise follow `grpc_proxy`,
`https_proxy` and `http_proxy` from the environment (set for the upstream HTTP egress of a
container, say) and send caller tokens and credential values through it. Not overridable."""


async def start_server(
    *,
    listen: str,
    register: Callable[[grpc.aio.Server], None],
    service_names: Sequence[str],
    interceptors: Sequence[grpc.aio.ServerInterceptor],
    tls: TlsFiles | None = None,
    metrics: MetricsExport | None = None,
) -> RunningServer:
    """Create, bind and start a server; `listen` is `host:port` (port 0 picks a free one).
    With `metrics`, its registry is served over HTTP on its own address once the server runs."""
    server = grpc.aio.server(interceptors=list(interceptors), options=list(_SERVER_OPTIONS))
    register(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    if tls is None:
        port = server.add_insecure_port(listen)
    else:
        client_ca = tls.client_ca.read_bytes() if tls.client_ca else None
        credentials = grpc.ssl_server_credentials(
            [(tls.key.read_bytes(), tls.cert.read_bytes())],
            root_certificates=client_ca,
            require_client_auth=client_ca is not None,
        )
        port = server.add_secure_port(listen, credentials)
    if port == 0:
        raise OSError(f"could not listen on {listen}")
    await server.start()
    try:
        endpoint = None
        if metrics is not None:
            from services.common.metrics import start_metrics_endpoint

            endpoint = start_metrics_endpoint(metrics)
    except BaseException:
        await server.stop(None)
        raise
    for name in ("", *service_names):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(server, health_servicer, port, tuple(service_names), endpoint)


async def run_until_signal(running: RunningServer, grace: float = 5.0) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    serving = asyncio.ensure_future(running.server.wait_for_termination())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not serving.done():
        await running.stop(grace)
        await serving


Metadata = Sequence[tuple[str, str | bytes]]


class _Authenticated:
    """A multi-callable that adds the request id and the caller token to the call's metadata.

    `x-request-id` is the request id bound in this context (`request_context`), when there is
    one and the caller did not pass its own; `traceparent` (`tracing.trace_metadata`) when
    tracing is on and a span is current; then comes the token, after whatever metadata the
    caller passes, as a client interceptor would add them. The call stays on grpc.aio's direct
    path: an intercepted call costs an extra task and call object on every RPC.
    """

    __slots__ = ("_inner", "_auth")

    def __init__(self, inner: Any, auth: tuple[tuple[str, str], ...]) -> None:
        self._inner = inner
        self._auth = auth

    def __repr__(self) -> str:
        return f"{type(self).__name__}(token=<hidden>)"

    def __call__(
        self,
        request: Any,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        added = self._auth
        request_id = current_request_id()
        if request_id and not (metadata and _has_request_id(metadata)):
            added = ((REQUEST_ID_KEY, request_id), *added)
        if tracing.active:  # W3C trace context of the current span, when there is one
            added = (*tracing.trace_metadata(), *added)
        return self._inner(
            request,
            timeout=timeout,
            metadata=(*metadata, *added) if metadata else added,
            credentials=credentials,
            wait_for_ready=wait_for_ready,
            compression=compression,
        )


def _has_request_id(metadata: Metadata) -> bool:
    return any(key == REQUEST_ID_KEY for key, _ in metadata)


class CallerChannel(grpc.aio.Channel):
    """A grpc.aio channel whose every call sends `authorization: Bearer <caller token>`, and
    `x-request-id` when a request id is bound (`services.common.request_context`).

    A drop-in `grpc.aio.Channel` (stubs take it as it is): each multi-callable it hands out adds
    the token to that call's metadata. The token is in no repr.
    """

    def __init__(self, channel: grpc.aio.Channel, token: str, target: str) -> None:
        self._channel = channel
        self._auth = (("authorization", f"Bearer {token}"),)
        self._target = target

    def __repr__(self) -> str:
        return f"CallerChannel(target={self._target!r}, token=<hidden>)"

    async def __aenter__(self) -> CallerChannel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._channel.close(None)

    async def close(self, grace: float | None = None) -> None:
        await self._channel.close(grace)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return self._channel.get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        await self._channel.wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        await self._channel.channel_ready()

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _Authenticated(self._channel.unary_unary(method, *args, **kwargs), self._auth)

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _Authenticated(self._channel.unary_stream(method, *args, **kwargs), self._auth)

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _Authenticated(self._channel.stream_unary(method, *args, **kwargs), self._auth)

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _Authenticated(self._channel.stream_stream(method, *args, **kwargs), self._auth)


#: Target schemes gRPC resolves itself; any other target is a DNS name (`host:port`).
_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:", "vsock:")


def channel_target(address: str) -> str:
    """The gRPC target of an address: `host:port` becomes `dns:///host:port`, so that the
    channel resolves every address of the name and round robin reaches each of them; a target
    with a scheme (`dns:`, `ipv4:127.0.0.1:5001,127.0.0.1:5002`, `unix:`, ...) stays as given.

    The authority (TLS server name, `:authority`) of `dns:///host:port` is `host:port`, as for
    the bare `host:port`: certificates are checked against the same name as before.
    """
    if address.startswith(_SCHEMES):
        return address
    return f"dns:///{address}"


def open_channel(
    target: str,
    token: str,
    tls: ClientTls | None = None,
    *,
    options: Sequence[tuple[str, Any]] = (),
) -> CallerChannel:
    """A channel to `target` whose every call is authenticated with the caller token and
    carries the current request id (so callers pass no metadata of their own for it).

    The channel spreads calls over every address of `target` (round robin), retries the RPCs
    that are safe to retry (`grpc_service_config.RETRIED`) and pings idle connections so a
    vanished replica is dropped quickly.

    Args:
        target: `host:port` (resolved through DNS: every address of the name), or a gRPC
            target with a scheme, such as `ipv4:127.0.0.1:5001,127.0.0.1:5002`
            (`channel_target`).
        token: the caller token, sent as `authorization: Bearer ...` on every call.
        tls: trust and client certificate; None for plaintext.
        options: gRPC channel arguments that replace the defaults of the same name (message
            sizes, keepalive, service config) or add to them (e.g. a reconnect backoff).
            Proxies stay off (`grpc.enable_http_proxy` 0) whatever `options` say.
    """
    target = channel_target(target)
    merged = list({**dict(_CHANNEL_OPTIONS), **dict(options), **dict(_NO_PROXY)}.items())
    if tls is None:
        return CallerChannel(grpc.aio.insecure_channel(target, options=merged), token, target)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=tls.ca.read_bytes(),
        private_key=tls.key.read_bytes() if tls.key else None,
        certificate_chain=tls.cert.read_bytes() if tls.cert else None,
    )
    channel = grpc.aio.secure_channel(target, credentials, options=merged)
    return CallerChannel(channel, token, target)
