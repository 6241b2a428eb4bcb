"""Replicas for balancing tests: gRPC servers on loopback that answer any of a few aicreds RPCs
with a fixed reply, count the attempts they saw per method, and fail on demand.

`target(*replicas)` lists their addresses in one gRPC target, as DNS lists a headless
Service's pods.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import grpc
import grpc.aio

from services.common.grpc_server import RunningServer, TlsFiles, start_server

Failure = Callable[[str, int], bool]
"""Whether a replica fails the nth attempt (from 1) of a method (`/package.Service/Method`)
with UNAVAILABLE."""


def never(method: str, attempt: int) -> bool:
    return False


@dataclass
class Replica:
    """A started replica and the attempts it saw, per method path."""

    server: RunningServer
    seen: Counter[str]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"


def target(*replicas: Replica) -> str:
    """One target naming every replica's address."""
    return "ipv4:" + ",".join(replica.address for replica in replicas)


async def start_replica(
    unary: Sequence[str] = (),
    streaming: Sequence[str] = (),
    *,
    fails: Failure = never,
    replies: Mapping[str, bytes] | None = None,
    tls: TlsFiles | None = None,
) -> Replica:
    """A replica serving the `unary` and server-`streaming` method paths. Each answers its
    serialized reply from `replies` (default: the empty message, a valid reply of any RPC);
    a streaming method sends it once."""
    seen: Counter[str] = Counter()
    answers = dict(replies or {})

    async def attempt(method: str, context: grpc.aio.ServicerContext) -> bytes:
        seen[method] += 1
        if fails(method, seen[method]):
            await context.abort(grpc.StatusCode.UNAVAILABLE, "not now")
        return answers.get(method, b"")

    def answer_once(method: str) -> Callable[[bytes, grpc.aio.ServicerContext], Awaitable[bytes]]:
        async def handle(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            return await attempt(method, context)

        return handle

    def answer_stream(
        method: str,
    ) -> Callable[[bytes, grpc.aio.ServicerContext], AsyncIterator[bytes]]:
        async def handle(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
            yield await attempt(method, context)

        return handle

    def register(server: grpc.aio.Server) -> None:
        by_service: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
        for path in unary:
            service, name = path[1:].split("/")
            handler = grpc.unary_unary_rpc_method_handler(answer_once(path))
            by_service.setdefault(service, {})[name] = handler
        for path in streaming:
            service, name = path[1:].split("/")
            handler = grpc.unary_stream_rpc_method_handler(answer_stream(path))
            by_service.setdefault(service, {})[name] = handler
        server.add_generic_rpc_handlers(
            tuple(grpc.method_handlers_generic_handler(s, h) for s, h in by_service.items())
        )

    running = await start_server(
        listen="127.0.0.1:0", register=register, service_names=[], interceptors=[], tls=tls
    )
    return Replica(running, seen)
