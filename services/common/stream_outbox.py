"""Writing a client's queued messages on a long-lived bidirectional stream.

The router's `ResolveStream`s to the vault (`services.router.resolve_stream`) and the gateway's
`InvokeBufferedStream`s to the router (`services.gateway.router_streams`) each keep an outbox:
the messages of their calls, in order, and `OUTBOX_END` to close their side. `write_outbox`
writes it, by the rules both need:

- **Nothing before the server accepted the stream.** `grpc_handlers` sends (empty) initial
  metadata once a bidi stream passed its checks. A message in flight when the server refuses
  the stream makes grpc.aio replace the refusal's status (UNAUTHENTICATED, PERMISSION_DENIED)
  with INTERNAL, and every call on the stream would report that.
- **A failed write ends the stream**: the call is cancelled, so its reader ends and fails what
  is in flight (the caller decides what may be sent again).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import grpc.aio

M = TypeVar("M")

OUTBOX_END = None
"""In an outbox: close our side of the stream once what is before it is written."""


async def write_outbox(
    call: Any,
    outbox: asyncio.Queue[M | None],
    prepare: Callable[[M], M | None] | None = None,
) -> None:
    """Write `outbox` on the bidi `call` (a grpc.aio `StreamStreamCall`) until `OUTBOX_END`,
    then close our side; `prepare` may change a message just before it is written, or drop it
    (None)."""
    try:
        await call.initial_metadata()
        if call.done():
            return  # refused (or ended): the reader reports its status
        while (message := await outbox.get()) is not OUTBOX_END:
            if prepare is not None and (message := prepare(message)) is None:
                continue
            await call.write(message)
        await call.done_writing()
    except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
        call.cancel()  # the reader then ends, failing what is in flight
