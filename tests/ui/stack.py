"""A real stack for the browser tests: `tests/gateway/support/model_stack.py`'s vault, router and
fake upstream, plus a gateway whose configured origin is the page's own origin.

    async with ui_stack(directory, upstream) as stack:
        stack.url                     the UI's gateway, e.g. http://127.0.0.1:41234 (= its origin)
        await stack.mint("bob")       an API token of a fresh user, every scope

The gateway of `llm_stack` is configured for `http://gateway.test`; a browser page's `Origin` is
the address it loaded, so a second gateway (gateways are stateless replicas) is started on a
socket bound first, with `GATEWAY_ORIGIN` set to that socket's address and plain-http cookies
(`cookie_secure=False`, as `make run` does).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import uvicorn
from aicreds.vault.v1 import auth_pb2, auth_pb2_grpc

from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings
from tests.gateway.support.fake_upstream import FakeUpstream
from tests.gateway.support.model_stack import LlmStack, llm_stack


@dataclass
class UiStack:
    url: str
    llm: LlmStack
    settings: GatewaySettings

    async def mint(self, user_id: str, scopes: Iterable[str] = (), name: str = "ui") -> str:
        """A new API token for `user_id` (the operator's way, through the vault)."""
        stub = auth_pb2_grpc.AuthServiceStub(self.llm.vault.channel("gateway"))
        reply = await stub.CreateToken(
            auth_pb2.CreateTokenRequest(user_id=user_id, name=name, scopes=list(scopes)),
            timeout=5,
        )
        return str(reply.token)


@contextlib.asynccontextmanager
async def _serve_on(app: object, sock: socket.socket) -> AsyncIterator[None]:
    config = uvicorn.Config(
        app, lifespan="auto", log_config=None, ws="none", access_log=False, loop="none"
    )
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("uvicorn stopped before it started")
            await asyncio.sleep(0.01)
        yield
    finally:
        server.should_exit = True
        await task
        sock.close()


@contextlib.asynccontextmanager
async def ui_stack(directory: Path, upstream: FakeUpstream) -> AsyncIterator[UiStack]:
    async with contextlib.AsyncExitStack() as exits:
        llm = await exits.enter_async_context(llm_stack(directory, upstream))
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        settings = replace(
            llm.gateway_settings,
            listen=url.removeprefix("http://"),
            origin=url,
            cookie_secure=False,
        )
        await exits.enter_async_context(_serve_on(create_app(settings), sock))
        yield UiStack(url, llm, settings)
