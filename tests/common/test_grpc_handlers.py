"""The shared interceptor: caller authentication, error mapping, access log, no leaks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.callers import CallerRegistry, Right
from services.common.errors import NotFound
from services.common.grpc_handlers import build_interceptors
from services.common.grpc_server import RunningServer, open_channel, start_server
from services.common.request_context import current_caller, current_request_id

SECRET = "sk-live-secret-value-that-must-not-leak"
ECHO = "/test.Echo/Echo"
STREAM = "/test.Echo/Stream"
ADMIN_ONLY = "/test.Echo/Admin"


async def _echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    if request.startswith(b"slow"):
        await asyncio.sleep(0.01)
        caller = current_caller()
        return f"{caller.name if caller else '-'}:{current_request_id()}".encode()
    if request == b"missing":
        raise NotFound("credential 'openai_api_key' not found", reason="credential_not_found")
    if request == b"boom":
        raise RuntimeError(f"database said {SECRET}")
    caller = current_caller()
    return f"{caller.name if caller else '-'}:{request.decode()}".encode()


async def _stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    yield b"one"
    if request == b"boom":
        raise ValueError(SECRET)
    yield b"two"


def _register(server: grpc.aio.Server) -> None:
    handlers = {
        "Echo": grpc.unary_unary_rpc_method_handler(_echo),
        "Stream": grpc.unary_stream_rpc_method_handler(_stream),
        "Admin": grpc.unary_unary_rpc_method_handler(_echo),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", handlers),))


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    callers = CallerRegistry.from_entries(
        [
            {"name": "gateway", "token": "tok-gateway", "rights": ["manage"]},
            {"name": "router", "token": "tok-router", "rights": ["resolve"]},
        ]
    )
    running = await start_server(
        listen="127.0.0.1:0",
        register=_register,
        service_names=["test.Echo"],
        interceptors=build_interceptors(
            service="test",
            callers=callers,
            required_rights={ECHO: Right.MANAGE, STREAM: Right.MANAGE, ADMIN_ONLY: Right.ADMIN},
        ),
    )
    yield running
    await running.stop(0)


async def _call(port: int, token: str | None, method: str, body: bytes) -> bytes:
    target = f"127.0.0.1:{port}"
    channel = open_channel(target, token) if token else grpc.aio.insecure_channel(target)
    async with channel:
        reply: bytes = await channel.unary_unary(method)(body, timeout=5)
        return reply


async def test_authorised_caller_reaches_the_handler(server: RunningServer) -> None:
    assert await _call(server.port, "tok-gateway", ECHO, b"hi") == b"gateway:hi"


@pytest.mark.parametrize("token", [None, "tok-unknown", ""])
async def test_missing_or_unknown_token_is_unauthenticated(
    server: RunningServer, token: str | None
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _call(server.port, token, ECHO, b"hi")
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_caller_without_the_right_is_denied(server: RunningServer) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _call(server.port, "tok-router", ECHO, b"hi")
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "manage" in (err.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _call(server.port, "tok-gateway", ADMIN_ONLY, b"hi")
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_concurrent_calls_each_see_their_own_caller_and_request_id(
    server: RunningServer,
) -> None:
    target = f"127.0.0.1:{server.port}"
    async with (
        open_channel(target, "tok-gateway") as gateway,
        open_channel(target, "tok-router") as router,
    ):

        async def one(n: int) -> tuple[str, bytes | Exception]:
            channel = gateway if n % 2 else router
            metadata = (("x-request-id", f"req-{n}"),)
            try:
                return (
                    f"gateway:req-{n}" if n % 2 else "denied",
                    await channel.unary_unary(ECHO)(b"slow", timeout=5, metadata=metadata),
                )
            except grpc.aio.AioRpcError as err:
                assert err.code() == grpc.StatusCode.PERMISSION_DENIED
                return "denied", err

        for expected, got in await asyncio.gather(*(one(n) for n in range(60))):
            if expected == "denied":
                assert isinstance(got, Exception)
            else:
                assert got == expected.encode()


async def test_domain_error_maps_to_status_with_reason(server: RunningServer) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _call(server.port, "tok-gateway", ECHO, b"missing")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert err.value.details() == "credential 'openai_api_key' not found"
    assert ("x-error-reason", "credential_not_found") in tuple(err.value.trailing_metadata())


async def test_unexpected_error_is_internal_and_never_leaks(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _call(server.port, "tok-gateway", ECHO, b"boom")
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert err.value.details() == "internal error"
    async with open_channel(f"127.0.0.1:{server.port}", "tok-gateway") as channel:
        call = channel.unary_stream(STREAM)(b"boom", timeout=5)
        received = []
        with pytest.raises(grpc.aio.AioRpcError) as stream_err:
            async for item in call:
                received.append(item)
    assert received == [b"one"]
    assert stream_err.value.code() == grpc.StatusCode.INTERNAL
    assert SECRET not in caplog.text
    for record in caplog.records:
        assert SECRET not in repr(record.__dict__)


async def test_access_log_names_caller_and_status(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aicreds.access")
    await _call(server.port, "tok-gateway", ECHO, b"hi")
    fields = [r.fields for r in caplog.records if r.name == "aicreds.access"]  # type: ignore[attr-defined]
    assert fields[-1]["caller"] == "gateway"
    assert fields[-1]["code"] == "OK"
    assert fields[-1]["method"] == ECHO


async def test_health_is_open_without_a_caller_token(server: RunningServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="test.Echo"), timeout=5
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    await server.stop(0)
