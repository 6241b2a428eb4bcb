"""A stand-in for the vault's `Resolve` (and `RecordUsage`, whose entries it keeps), for router
tests that need to control the vault itself (slow, stopped and restarted on the same port).
End-to-end tests use the real vault.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import grpc
import grpc.aio
from aicreds.vault.v1 import (
    credentials_pb2,
    credentials_pb2_grpc,
    providers_pb2,
    usage_pb2,
    usage_pb2_grpc,
)

from services.common.grpc_handlers import ERROR_REASON_KEY
from services.router.placeholders import referenced_keys


@dataclass
class FakeVault(
    credentials_pb2_grpc.CredentialServiceServicer, usage_pb2_grpc.UsageServiceServicer
):
    """Resolve by provider name or model over in-memory providers and credentials; usage
    reports kept in `usage` (or refused with UNAVAILABLE while `refuse_usage`)."""

    token: str
    providers: dict[str, list[providers_pb2.Provider]] = field(default_factory=dict)
    credentials: dict[str, dict[str, str]] = field(default_factory=dict)
    delay: float = 0.0
    requests: list[credentials_pb2.ResolveRequest] = field(default_factory=list)
    usage: list[usage_pb2.UsageEntry] = field(default_factory=list)
    usage_requests: int = 0  # RecordUsage calls answered
    refuse_usage: bool = False
    port: int = 0
    _server: grpc.aio.Server | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Start (again) on the same port once it has one."""
        server = grpc.aio.server()
        credentials_pb2_grpc.add_CredentialServiceServicer_to_server(self, server)
        usage_pb2_grpc.add_UsageServiceServicer_to_server(self, server)
        self.port = server.add_insecure_port(f"127.0.0.1:{self.port}")
        await server.start()
        self._server = server

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(0)
            self._server = None

    async def Resolve(  # noqa: N802
        self, request: credentials_pb2.ResolveRequest, context: grpc.aio.ServicerContext
    ) -> credentials_pb2.ResolveResponse:
        if (("authorization", f"Bearer {self.token}")) not in tuple(
            context.invocation_metadata() or ()
        ):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "caller not authenticated")
        self.requests.append(request)
        if self.delay:
            await asyncio.sleep(self.delay)
        providers = self.providers.get(request.user_id, [])
        upstream_model = ""
        if request.WhichOneof("target") == "provider_name":
            chosen = [p for p in providers if p.name == request.provider_name]
            missing_reason = "provider_not_found"
        else:
            prefix, _, rest = request.model.partition("/")
            chosen = [p for p in providers if rest and p.name == prefix]
            upstream_model = rest if chosen else request.model
            chosen = chosen or [p for p in providers if request.model in p.models]
            missing_reason = "model_not_found"
        if not chosen:
            context.set_trailing_metadata(((ERROR_REASON_KEY, missing_reason),))
            await context.abort(grpc.StatusCode.NOT_FOUND, f"{missing_reason.replace('_', ' ')}")
        provider = chosen[0]
        keys = referenced_keys(v for hv in provider.headers.values() for v in hv.values)
        stored = self.credentials.get(request.user_id, {})
        return credentials_pb2.ResolveResponse(
            provider=provider,
            values={k: stored[k] for k in keys if k in stored},
            missing_keys=sorted(k for k in keys if k not in stored),
            upstream_model=upstream_model if request.WhichOneof("target") == "model" else "",
        )

    async def RecordUsage(  # noqa: N802
        self, request: usage_pb2.RecordUsageRequest, context: grpc.aio.ServicerContext
    ) -> usage_pb2.RecordUsageResponse:
        if self.refuse_usage:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "not now")
        self.usage.extend(request.entries)
        self.usage_requests += 1
        return usage_pb2.RecordUsageResponse()
