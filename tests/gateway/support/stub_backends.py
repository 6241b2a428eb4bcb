"""Scripted stand-ins for the router and the vault's ProviderService, on real gRPC servers.

They let the gateway's model endpoints be tested on their own — relay, warnings, error shapes,
disconnects — with every answer chosen by the test. `test_sdk_stack.py` runs the real services.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
from aicreds.router.v1 import router_pb2, router_pb2_grpc
from aicreds.vault.v1 import providers_pb2, providers_pb2_grpc

Failure = tuple[grpc.StatusCode, str, str | None]  # code, public details, x-error-reason


@dataclass
class RouterScript:
    """What the stub router answers to the next Invoke calls."""

    status: int = 200
    headers: list[tuple[str, str]] = field(
        default_factory=lambda: [("content-type", "application/json")]
    )
    chunks: list[bytes] = field(default_factory=list)
    initial_warnings: list[str] = field(default_factory=list)
    trailing_warnings: list[str] = field(default_factory=list)
    fail_before_head: Failure | None = None
    fail_after_chunks: Failure | None = None
    hold_after_first_chunk: bool = False


class StubRouter(router_pb2_grpc.RouterServiceServicer):
    """Answers Invoke and InvokeBuffered from the same script; `requests` holds the calls of
    both (an InvokeBuffered's `call`), `rpcs` which RPC each was and `max_body_bytes` what a
    buffered call asked for."""

    def __init__(self) -> None:
        self.script = RouterScript()
        self.requests: list[router_pb2.InvokeRequest] = []
        self.rpcs: list[str] = []
        self.max_body_bytes: list[int] = []
        self.metadata: list[dict[str, str]] = []
        self.first_chunk_sent = threading.Event()
        self.last_chunk_sent = threading.Event()
        self.cancelled = threading.Event()
        self.cancelled_at: float | None = None
        self._release: asyncio.Event | None = None

    def reset(self, script: RouterScript | None = None) -> None:
        self.script = script or RouterScript()
        self.requests.clear()
        self.rpcs.clear()
        self.max_body_bytes.clear()
        self.metadata.clear()
        self.first_chunk_sent.clear()
        self.last_chunk_sent.clear()
        self.cancelled.clear()
        self.cancelled_at = None
        self._release = None

    def release(self, loop: asyncio.AbstractEventLoop) -> None:
        """Let the held stream (if any) go on."""
        release = self._release
        if release is not None:
            loop.call_soon_threadsafe(release.set)

    async def Invoke(  # noqa: N802 - the gRPC method name
        self, request: router_pb2.InvokeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[router_pb2.InvokeResponse]:
        script = self.script
        self.requests.append(request)
        self.rpcs.append("Invoke")
        self.metadata.append({k: v for k, v in context.invocation_metadata() or ()})
        if self._release is None:
            self._release = asyncio.Event()
        release = self._release
        if script.initial_warnings:
            await context.send_initial_metadata(
                tuple(("x-credential-warning", w) for w in script.initial_warnings)
            )
        if script.fail_before_head is not None:
            await _abort(context, script.fail_before_head)
        try:
            yield router_pb2.InvokeResponse(
                head=router_pb2.ResponseHead(
                    status=script.status,
                    headers=[router_pb2.Header(name=n, value=v) for n, v in script.headers],
                )
            )
            for index, chunk in enumerate(script.chunks):
                if index == 1 and script.hold_after_first_chunk:
                    await release.wait()
                yield router_pb2.InvokeResponse(chunk=chunk)
                if index == 0:
                    self.first_chunk_sent.set()
            self.last_chunk_sent.set()
            if script.fail_after_chunks is not None:
                await _abort(context, script.fail_after_chunks)
            if script.trailing_warnings:
                context.set_trailing_metadata(
                    tuple(("x-credential-warning", w) for w in script.trailing_warnings)
                )
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled_at = time.monotonic()
            self.cancelled.set()
            raise

    async def InvokeBuffered(  # noqa: N802 - the gRPC method name
        self, request: router_pb2.InvokeBufferedRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.InvokeBufferedResponse:
        """The script as one answer: `hold_after_first_chunk` holds the whole answer,
        `fail_after_chunks` fails the call (a buffered call has no partial answer)."""
        script = self.script
        self.requests.append(request.call)
        self.rpcs.append("InvokeBuffered")
        self.max_body_bytes.append(request.max_body_bytes)
        self.metadata.append({k: v for k, v in context.invocation_metadata() or ()})
        if self._release is None:
            self._release = asyncio.Event()
        release = self._release
        warnings = list(dict.fromkeys(script.initial_warnings + script.trailing_warnings))
        if warnings:
            context.set_trailing_metadata(tuple(("x-credential-warning", w) for w in warnings))
        try:
            if script.fail_before_head is not None:
                await _abort(context, script.fail_before_head)
            if script.hold_after_first_chunk:
                await release.wait()
            self.first_chunk_sent.set()
            self.last_chunk_sent.set()
            if script.fail_after_chunks is not None:
                await _abort(context, script.fail_after_chunks)
        except asyncio.CancelledError:
            self.cancelled_at = time.monotonic()
            self.cancelled.set()
            raise
        return router_pb2.InvokeBufferedResponse(
            head=router_pb2.ResponseHead(
                status=script.status,
                headers=[router_pb2.Header(name=n, value=v) for n, v in script.headers],
            ),
            body=b"".join(script.chunks),
            warnings=warnings,
        )


async def _abort(context: grpc.aio.ServicerContext, failure: Failure) -> None:
    code, details, reason = failure
    trailing = (("x-error-reason", reason),) if reason else ()
    await context.abort(code, details, trailing_metadata=trailing)


class StubProviders(providers_pb2_grpc.ProviderServiceServicer):
    def __init__(self) -> None:
        self.providers: dict[str, list[providers_pb2.Provider]] = {}
        self.failure: Failure | None = None

    async def ListProviders(  # noqa: N802 - the gRPC method name
        self, request: providers_pb2.ListProvidersRequest, context: grpc.aio.ServicerContext
    ) -> providers_pb2.ListProvidersResponse:
        if self.failure is not None:
            await _abort(context, self.failure)
        providers = sorted(self.providers.get(request.user_id, []), key=lambda p: p.name)
        return providers_pb2.ListProvidersResponse(providers=providers)


@dataclass
class StubServer:
    address: str
    server: grpc.aio.Server

    async def stop(self) -> None:
        await self.server.stop(0)


async def start_stub_server(router: StubRouter, providers: StubProviders) -> StubServer:
    server = grpc.aio.server()
    router_pb2_grpc.add_RouterServiceServicer_to_server(router, server)
    providers_pb2_grpc.add_ProviderServiceServicer_to_server(providers, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return StubServer(f"127.0.0.1:{port}", server)


def provider(name: str, models: list[str], kind: Any = providers_pb2.PROVIDER_KIND_OPENAI) -> Any:
    return providers_pb2.Provider(
        name=name, kind=kind, base_url="http://127.0.0.1:9/v1", models=models
    )
