"""The call every RouterService test makes: user-1's `openai` provider on the fake upstream,
behind the fake vault, and an Invoke request for it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from aicreds.router.v1 import router_pb2
from aicreds.router.v1 import router_pb2 as pb

from services.gateway.router_streams import RouterStreams, StreamedInvoke
from tests.router.conftest import provider
from tests.router.fake_vault import FakeVault
from tests.support.fake_upstream import FakeUpstream

SECRET = "sk-live-0123456789abcdef-SECRET"
USER = "user-1"


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


def streams_over(stub: Any, **options: Any) -> RouterStreams:
    """The gateway's `RouterStreams` on a `RouterServiceStub`, its unary fallbacks on the same
    stub (as `RouterClient` wires them)."""
    return RouterStreams(
        stub,
        lambda r, t: stub.InvokeBuffered(r, timeout=t),
        lambda r, t: stub.Invoke(r, timeout=t),
        **options,
    )
