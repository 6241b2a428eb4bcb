"""The router process: wiring of settings, resolve client, upstream client, provider checker
and servicer.

`start_router(settings)` is used by `main` (`aicreds-router`) and by tests alike. It refuses a
bad configuration with `StartupRefused` (naming what to fix), then starts the gRPC server with
health, reflection, caller auth (right `invoke`), the access log and optional (mutual) TLS, and
with `ROUTER_METRICS_LISTEN` its Prometheus metrics (RPCs, upstream calls, the pool, egress
refusals) on that address. Nothing persistent: every replica is the same.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass

import grpc.aio
import uvloop
from aicreds.router.v1 import router_pb2_grpc
from prometheus_client import CollectorRegistry

from services.common.callers import CallerRegistry, Right, read_secret_file
from services.common.grpc_handlers import build_interceptors
from services.common.grpc_server import RunningServer, run_until_signal, start_server
from services.common.logging import configure_logging
from services.common.metrics import MetricsExport, RpcMetrics
from services.common.startup_heap import freeze_startup_heap
from services.common.tracing_setup import Tracing, start_tracing
from services.router.buffered_stream import StreamingRouterServicer
from services.router.config import RouterSettings
from services.router.egress import Resolver
from services.router.invocation import Router
from services.router.metrics import RouterMetrics
from services.router.provider_check import ProviderChecker
from services.router.resolve_client import ResolveClient, open_vault_channel
from services.router.token_metrics import TokenMetrics
from services.router.transport import NetworkBackend, UpstreamClient
from services.router.usage_reporter import UsageReporter

ROUTER_SERVICE = "aicreds.router.v1.RouterService"
REQUIRED_RIGHTS: Mapping[str, Right] = {
    f"/{ROUTER_SERVICE}/Invoke": Right.INVOKE,
    f"/{ROUTER_SERVICE}/InvokeBuffered": Right.INVOKE,
    f"/{ROUTER_SERVICE}/InvokeBufferedStream": Right.INVOKE,
    f"/{ROUTER_SERVICE}/Preview": Right.INVOKE,
    f"/{ROUTER_SERVICE}/CheckUpstream": Right.INVOKE,
    f"/{ROUTER_SERVICE}/CheckProvider": Right.INVOKE,
}

_log = logging.getLogger("aicreds.router")


class StartupRefused(Exception):
    """The configuration cannot work; the message says what to fix (and holds no secret)."""


@dataclass
class RunningRouter:
    """A started router and what it must close when it stops."""

    settings: RouterSettings
    server: RunningServer
    upstream: UpstreamClient
    vault_channel: grpc.aio.Channel
    tracing: Tracing
    usage: UsageReporter
    resolve: ResolveClient

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def stop(self, grace: float = 5.0) -> None:
        """Drain (health NOT_SERVING), stop serving, then close the clients."""
        try:
            await self.server.stop(grace)
        finally:
            await self.close_clients()

    async def close_clients(self) -> None:
        """Close what the router calls out with, once it serves no more: the upstream pool,
        the usage reports (sent first), the streams to the vault and their channel, tracing."""
        await self.upstream.aclose()
        await self.usage.aclose()
        await self.resolve.aclose()
        await self.vault_channel.close()
        await self.tracing.shutdown()


async def start_router(
    settings: RouterSettings,
    *,
    resolver: Resolver | None = None,
    network_backend: NetworkBackend | None = None,
) -> RunningRouter:
    """Start a router as configured.

    Args:
        settings: the configuration.
        resolver: DNS for upstream hosts (tests pass a stub); by default the system's, on
            threads of the upstream client's own (`services.router.resolver`).
        network_backend: what connects to checked upstream addresses (tests may wrap it).
    """
    try:
        callers = CallerRegistry.load(settings.callers_file)
        vault_token = read_secret_file(settings.vault_token_file)
        policy = settings.egress_policy
    except ValueError as err:
        raise StartupRefused(str(err)) from None
    channel = open_vault_channel(settings.vault_addr, vault_token, settings.vault_tls)
    tracing = start_tracing(settings.tracing)
    upstream = UpstreamClient(
        policy,
        resolver=resolver,
        connect_timeout=settings.connect_timeout,
        resolve_timeout=settings.resolve_timeout,
        first_byte_timeout=settings.first_byte_timeout,
        idle_timeout=settings.idle_timeout,
        network_backend=network_backend,
        max_connections=settings.max_connections,
        max_connections_per_origin=settings.max_connections_per_origin,
        max_keepalive=min(100, settings.max_connections),
        ca_file=str(settings.upstream_ca_file) if settings.upstream_ca_file else None,
    )
    # Metrics only when exported: otherwise no call pays for them.
    registry = CollectorRegistry(auto_describe=True) if settings.metrics_listen else None
    metrics = RouterMetrics(registry) if registry is not None else None
    if metrics is not None:
        metrics.watch_pool(upstream.connections_in_use, upstream.connections_idle)
    # Token usage goes to the vault whether or not metrics are exported (issue 18).
    token_metrics = (
        TokenMetrics(registry, metrics.provider_label)
        if registry is not None and metrics is not None
        else None
    )
    usage = UsageReporter(channel, token_metrics)
    resolve = ResolveClient(channel, settings.vault_addr)
    router = Router(
        resolve,
        upstream,
        settings.vault_timeout,
        settings.header_bounds,
        metrics,
        usage,
        tracer=tracing.tracer,
    )
    servicer = StreamingRouterServicer(router, ProviderChecker(router), settings.upstream_timeout)
    try:
        server = await start_server(
            listen=settings.listen,
            register=lambda s: router_pb2_grpc.add_RouterServiceServicer_to_server(servicer, s),
            service_names=[ROUTER_SERVICE],
            interceptors=build_interceptors(
                service="router",
                callers=callers,
                required_rights=REQUIRED_RIGHTS,
                metrics=RpcMetrics("router", registry) if registry is not None else None,
                tracer=tracing.tracer,
            ),
            tls=settings.tls,
            metrics=(
                MetricsExport(settings.metrics_listen, registry)
                if settings.metrics_listen and registry is not None
                else None
            ),
        )
    except BaseException:
        await upstream.aclose()
        await channel.close()
        await tracing.shutdown()
        raise
    # The gateway's streams of buffered calls end (OK) once the calls they carry are answered.
    server.on_drain.append(servicer.drain)
    usage.start()
    _log.info(
        "router serving",
        extra={
            "fields": {
                "listen": settings.listen,
                "port": server.port,
                "vault": settings.vault_addr,
                "tls": settings.tls is not None,
                "mutual_tls": settings.tls is not None and settings.tls.client_ca is not None,
                "vault_tls": settings.vault_tls is not None,
                "egress_allow": settings.egress_allow,
                "callers": callers.names,
                "metrics_port": server.metrics.port if server.metrics else None,
            }
        },
    )
    return RunningRouter(settings, server, upstream, channel, tracing, usage, resolve)


async def serve(settings: RouterSettings) -> None:
    running = await start_router(settings)
    freeze_startup_heap()
    try:
        await run_until_signal(running.server, settings.shutdown_grace)
    finally:
        await running.close_clients()


def main() -> None:
    """`aicreds-router`: run the router until SIGTERM/SIGINT."""
    try:
        settings = RouterSettings.from_env(os.environ)
    except ValueError as err:
        sys.exit(f"aicreds-router: {err}")
    configure_logging("router", settings.log_level)
    # httpx logs every request URL at INFO; a client's query string may hold its own secrets,
    # and the router writes its own line per call.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        uvloop.run(serve(settings))
    except StartupRefused as err:
        _log.critical("router refused to start", extra={"fields": {"problem": str(err)}})
        sys.exit(f"aicreds-router: refusing to start: {err}")
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
