"""Internal gRPC channels ignore `grpc_proxy`/`https_proxy`/`http_proxy` in the environment:
they connect straight to the target, never through a proxy that would see caller tokens and
credential values."""

from __future__ import annotations

import socket
import threading
from collections.abc import AsyncIterator, Iterator

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.callers import CallerRegistry
from services.common.grpc_handlers import build_interceptors
from services.common.grpc_server import RunningServer, open_channel, start_server

PROXY_VARIABLES = ("grpc_proxy", "https_proxy", "http_proxy", "GRPC_PROXY", "HTTPS_PROXY")


@pytest.fixture
def proxy_listener() -> Iterator[tuple[str, list[bytes]]]:
    """A "proxy" on 127.0.0.1 that records what it is sent and answers nothing useful."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    received: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(1)
                try:
                    received.append(conn.recv(4096))
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}", received
    listener.close()
    thread.join(timeout=2)


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    running = await start_server(
        listen="127.0.0.1:0",
        register=lambda _server: None,
        service_names=[],
        interceptors=build_interceptors(
            service="test", callers=CallerRegistry.from_entries([]), required_rights={}
        ),
    )
    yield running
    await running.stop(0)


async def test_a_channel_reaches_its_target_with_proxies_in_the_environment(
    server: RunningServer,
    proxy_listener: tuple[str, list[bytes]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proxy, received = proxy_listener
    for name in PROXY_VARIABLES:
        monkeypatch.setenv(name, proxy)
    for name in ("no_proxy", "NO_PROXY", "no_grpc_proxy"):
        monkeypatch.delenv(name, raising=False)
    channel = open_channel(f"127.0.0.1:{server.port}", "token")
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        answer = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=3)
    finally:
        await channel.close()
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    assert received == []


async def test_a_caller_cannot_turn_proxies_back_on(
    server: RunningServer,
    proxy_listener: tuple[str, list[bytes]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proxy, received = proxy_listener
    monkeypatch.setenv("grpc_proxy", proxy)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("no_grpc_proxy", raising=False)
    channel = open_channel(
        f"127.0.0.1:{server.port}", "token", options=[("grpc.enable_http_proxy", 1)]
    )
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        answer = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=3)
    finally:
        await channel.close()
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    assert received == []
