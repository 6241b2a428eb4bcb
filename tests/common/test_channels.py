"""`open_channel`: the caller token and the bound request id on every call, and channel options
merged over the defaults."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
import grpc.aio
import pytest

from services.common.callers import CallerRegistry, Right
from services.common.grpc_handlers import build_interceptors
from services.common.grpc_server import RunningServer, open_channel, start_server
from services.common.request_context import (
    bind_request_id,
    current_caller,
    current_request_id,
    unbind_request_id,
)

ECHO = "/test.Echo/Echo"
WHO = "/test.Echo/Who"
MIB = 1024 * 1024
TOKEN = "tok-router"


async def _echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


async def _who(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    caller = current_caller()
    yield (caller.name if caller else "-").encode()
    yield current_request_id().encode()


def _register(server: grpc.aio.Server) -> None:
    handlers = {
        "Echo": grpc.unary_unary_rpc_method_handler(_echo),
        "Who": grpc.unary_stream_rpc_method_handler(_who),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", handlers),))


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    callers = CallerRegistry.from_entries(
        [{"name": "router", "token": TOKEN, "rights": ["resolve"]}]
    )
    running = await start_server(
        listen="127.0.0.1:0",
        register=_register,
        service_names=["test.Echo"],
        interceptors=build_interceptors(
            service="test",
            callers=callers,
            required_rights={ECHO: Right.RESOLVE, WHO: Right.RESOLVE},
        ),
    )
    yield running
    await running.stop(0)


async def _echo_call(
    server: RunningServer, body: bytes, options: Sequence[tuple[str, Any]]
) -> bytes:
    """One authenticated Echo call (the token must reach the server, or it is refused)."""
    target = f"127.0.0.1:{server.port}"
    async with open_channel(target, TOKEN, options=options) as channel:
        reply: bytes = await channel.unary_unary(ECHO)(body, timeout=10)
        return reply


async def test_extra_options_keep_the_defaults(server: RunningServer) -> None:
    # 5 MiB is over grpc's own 4 MiB receive limit: it passes only with the defaults kept.
    body = b"x" * (5 * MIB)
    backoff = [("grpc.max_reconnect_backoff_ms", 2000)]
    assert await _echo_call(server, body, backoff) == body


async def test_an_option_replaces_the_default_of_the_same_name(server: RunningServer) -> None:
    small = [("grpc.max_receive_message_length", 1024)]
    assert await _echo_call(server, b"x" * 1000, small) == b"x" * 1000
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _echo_call(server, b"x" * 2048, small)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_the_token_goes_with_the_callers_own_metadata(server: RunningServer) -> None:
    async with open_channel(f"127.0.0.1:{server.port}", TOKEN) as channel:
        who = channel.unary_stream(WHO)
        plain = [item async for item in who(b"", timeout=10)]
        tagged = [item async for item in who(b"", timeout=10, metadata=(("x-request-id", "r-1"),))]
        metadata = grpc.aio.Metadata(("x-request-id", "r-2"))
        as_metadata = [item async for item in who(b"", timeout=10, metadata=metadata)]
    assert plain[0] == tagged[0] == as_metadata[0] == b"router"
    assert len(plain[1]) == 32  # generated when the caller sent none
    assert tagged[1] == b"r-1" and as_metadata[1] == b"r-2"


async def test_the_token_is_in_no_repr(server: RunningServer) -> None:
    async with open_channel(f"127.0.0.1:{server.port}", TOKEN) as channel:
        texts = [repr(channel), repr(channel.unary_unary(ECHO)), repr(channel.unary_stream(WHO))]
    assert str(server.port) in texts[0]
    assert not any(TOKEN in text for text in texts)


# -- x-request-id from the request-id ContextVar ---------------------------------------------------


@pytest.fixture
async def capturing() -> AsyncIterator[tuple[int, list[list[tuple[str, str]]]]]:
    """A bare grpc.aio server (no interceptor that would invent an id) recording the metadata
    of every call it receives."""
    seen: list[list[tuple[str, str]]] = []

    async def record(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        seen.append([(str(k), str(v)) for k, v in context.invocation_metadata() or ()])
        return request

    handlers = {"Echo": grpc.unary_unary_rpc_method_handler(record)}
    bare = grpc.aio.server()
    bare.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", handlers),))
    port = bare.add_insecure_port("127.0.0.1:0")
    await bare.start()
    yield port, seen
    await bare.stop(0)


def _values(metadata: list[tuple[str, str]], key: str) -> list[str]:
    return [value for name, value in metadata if name == key]


async def test_the_bound_request_id_goes_with_every_call(
    capturing: tuple[int, list[list[tuple[str, str]]]],
) -> None:
    port, seen = capturing
    async with open_channel(f"127.0.0.1:{port}", TOKEN) as channel:
        echo = channel.unary_unary(ECHO)
        token = bind_request_id("req-bound-1")
        try:
            await echo(b"", timeout=10)
            await echo(b"", timeout=10, metadata=(("x-other", "1"),))
        finally:
            unbind_request_id(token)
    for metadata in seen:
        assert _values(metadata, "x-request-id") == ["req-bound-1"]
        assert _values(metadata, "authorization") == [f"Bearer {TOKEN}"]
    assert _values(seen[1], "x-other") == ["1"]


async def test_no_request_id_is_sent_when_none_is_bound(
    capturing: tuple[int, list[list[tuple[str, str]]]],
) -> None:
    port, seen = capturing
    async with open_channel(f"127.0.0.1:{port}", TOKEN) as channel:
        await channel.unary_unary(ECHO)(b"", timeout=10)
    assert _values(seen[0], "x-request-id") == []
    assert _values(seen[0], "authorization") == [f"Bearer {TOKEN}"]


async def test_a_request_id_the_caller_passes_is_not_doubled(
    capturing: tuple[int, list[list[tuple[str, str]]]],
) -> None:
    # Callers that still attach the id by hand (until they are switched) send it once.
    port, seen = capturing
    async with open_channel(f"127.0.0.1:{port}", TOKEN) as channel:
        echo = channel.unary_unary(ECHO)
        token = bind_request_id("req-bound-2")
        try:
            await echo(b"", timeout=10, metadata=(("x-request-id", "req-own"),))
            await echo(b"", timeout=10, metadata=grpc.aio.Metadata(("x-request-id", "req-md")))
        finally:
            unbind_request_id(token)
    assert _values(seen[0], "x-request-id") == ["req-own"]
    assert _values(seen[1], "x-request-id") == ["req-md"]
