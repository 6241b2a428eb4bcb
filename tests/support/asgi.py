"""Serving an ASGI app (the gateway) with a real uvicorn server inside a test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import uvicorn


def bind_loopback() -> socket.socket:
    """A TCP socket bound to 127.0.0.1:0, for `serve_asgi` (its address known before the app)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def socket_url(sock: socket.socket) -> str:
    return f"http://127.0.0.1:{sock.getsockname()[1]}"


@contextlib.asynccontextmanager
async def serve_asgi(app: Any, sock: socket.socket | None = None) -> AsyncIterator[str]:
    """Serve `app` with uvicorn in this event loop on `sock` (default: a fresh 127.0.0.1:0);
    yield its URL. The socket is closed on exit."""
    sock = sock or bind_loopback()
    config = uvicorn.Config(
        app,
        lifespan="auto",
        log_config=None,
        ws="none",
        access_log=False,
        http="httptools",
        loop="none",
    )
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("uvicorn stopped before it started")
            await asyncio.sleep(0.01)
        yield socket_url(sock)
    finally:
        server.should_exit = True
        await task
        sock.close()
