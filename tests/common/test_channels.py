"""`open_channel`: the caller token on every call, and channel options merged over the defaults."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
import grpc.aio
import pytest

from services.common.callers import CallerRegistry, Right
from services.common.grpc_handlers import build_interceptors
from services.common.grpc_server import RunningServer, open_channel, start_server
from services.common.request_context import current_caller, current_request_id

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
