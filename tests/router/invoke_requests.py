"""The call every RouterService test makes: user-1's `openai` provider on the fake upstream,
behind the fake vault, and an Invoke request for it; and the gateway's `RouterStreams` on a
real router or on a small fake one."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import grpc.aio
from aicreds.router.v1 import router_pb2, router_pb2_grpc
from aicreds.router.v1 import router_pb2 as pb

from services.common.grpc_server import open_channel
from services.gateway.router_streams import RouterStreams, StreamedInvoke
from tests.router.conftest import RouterEnv, provider
from tests.router.fake_vault import FakeVault
from tests.support.fake_upstream import FakeUpstream, RecordedRequest, Reply

SERVICE = "aicreds.router.v1.RouterService"
SECRET = "sk-live-0123456789abcdef-SECRET"
USER = "user-1"
ONE_KEY_MISSING = {
    "Authorization": ["Bearer {{credential:openai_api_key}}"],
    "X-Org": ["{{credential:x}}"],
}
"""Headers of which one references a key user-1 does not have (`x`): a call's warning."""


def setup_openai(
    vault: FakeVault,
    upstream: FakeUpstream,
    headers: dict[str, list[str]],
    *,
    on_missing: str = "warn",
    base_url: str | None = None,
    models: tuple[str, ...] = ("gpt-4o",),
) -> None:
    vault.providers[USER] = [
        provider(
            "openai",
            base_url or upstream.base_url + "/v1",
            headers,
            models=models,
            on_missing=on_missing,
        )
    ]
    vault.credentials[USER] = {"openai_api_key": SECRET, "org": "org-42"}


def invoke_request(**fields: object) -> router_pb2.InvokeRequest:
    defaults: dict[str, object] = {
        "user_id": USER,
        "provider_name": "openai",
        "method": "POST",
        "path": "/chat/completions",
        "body": b'{"model":"gpt-4o"}',
    }
    defaults.update(fields)
    return router_pb2.InvokeRequest(**defaults)  # type: ignore[arg-type]


async def one_by_one(
    messages: AsyncIterator[pb.InvokeBufferedStreamResponse],
) -> AsyncIterator[pb.InvokeBufferedStreamResponse]:
    """The answers of the router's messages one by one (a message may carry more: `more`)."""
    async for message in messages:
        more = list(message.more)
        message.ClearField("more")
        yield message
        for answer in more:
            yield answer


async def start_stream_when_ready(
    streams: RouterStreams, request: pb.InvokeRequest, timeout: float
) -> StreamedInvoke:
    """`streams.start_stream`, once a stream said it takes streamed calls (until then the
    gateway sends them unary, and `start_stream` only opens the streams)."""
    for _ in range(500):
        call = streams.start_stream(request, timeout)
        if call is not None:
            return call
        await asyncio.sleep(0.01)
    raise AssertionError("no stream took a streamed call")


async def status_of_call(call: object) -> grpc.StatusCode:
    """The status a call (a grpc.aio call, or the gateway's call on a stream) ends with: OK, or
    the code of the `AioRpcError` awaiting it raises."""
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


def streams_over(stub: Any, **options: Any) -> RouterStreams:
    """The gateway's `RouterStreams` on a `RouterServiceStub`, its unary fallbacks on the same
    stub (as `RouterClient` wires them)."""
    return RouterStreams(
        stub,
        lambda r, t: stub.InvokeBuffered(r, timeout=t),
        lambda r, t: stub.Invoke(r, timeout=t),
        **options,
    )


def gateway_streams(env: RouterEnv, caller: str = "gateway", **options: Any) -> RouterStreams:
    """`streams_over` the stub of `env`'s router that `caller` holds."""
    return streams_over(env.stub(caller), **options)


def router_server(handlers: dict[str, grpc.RpcMethodHandler]) -> tuple[grpc.aio.Server, int]:
    """A RouterService on 127.0.0.1 (a free port) with only `handlers`, not yet started: the
    server and its port."""
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    return server, server.add_insecure_port("127.0.0.1:0")


@asynccontextmanager
async def serving(
    server: grpc.aio.Server, port: int, **options: Any
) -> AsyncIterator[RouterStreams]:
    """Starts `server` (a `router_server`) and gives the gateway's `RouterStreams` on a channel
    to it; on the way out closes the streams, the channel and the server."""
    await server.start()
    channel = open_channel(f"127.0.0.1:{port}", "svc-" + secrets.token_urlsafe(8))
    streams = streams_over(router_pb2_grpc.RouterServiceStub(channel), **options)
    try:
        yield streams
    finally:
        await streams.aclose()
        await channel.close()
        await server.stop(None)


class HeldReply:
    """An upstream handler that sets `started` when a request arrives and, once `release` is
    set, answers it 200 with `{}`."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, request: RecordedRequest, reply: Reply) -> None:
        self.started.set()
        await self.release.wait()
        await reply.head(200, [("content-type", "application/json")])
        await reply.chunk(b"{}")
        await reply.end()


@asynccontextmanager
async def open_streams(
    env: RouterEnv, caller: str = "gateway", **options: Any
) -> AsyncIterator[RouterStreams]:
    """`gateway_streams`, closed on the way out."""
    streams = gateway_streams(env, caller, **options)
    try:
        yield streams
    finally:
        await streams.aclose()
