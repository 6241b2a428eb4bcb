"""ProviderService over gRPC, and the conversion of providers to and from protobuf."""

from __future__ import annotations

from collections.abc import Iterable

import grpc.aio
from aicreds.vault.v1 import providers_pb2 as pb
from aicreds.vault.v1 import providers_pb2_grpc

from services.common.provider_proto import (
    kind_name,
    kind_number,
    on_missing_name,
    on_missing_number,
)
from services.vault.providers import ProviderBook, ProviderConfig, ProviderView
from services.vault.servicers import caller_name
from services.vault.servicers.serialized import concatenated


def provider_from_proto(message: pb.Provider) -> ProviderConfig:
    """A provider from a request; unknown enum values become strings validation refuses."""
    return ProviderConfig(
        name=message.name,
        kind=kind_name(message.kind) or "unspecified",
        base_url=message.base_url,
        headers={name: list(values.values) for name, values in message.headers.items()},
        models=tuple(message.models),
        on_missing_credential=on_missing_name(message.on_missing_credential) or "unknown",
    )


def provider_to_proto(config: ProviderConfig) -> pb.Provider:
    return pb.Provider(
        name=config.name,
        kind=kind_number(config.kind),
        base_url=config.base_url,
        headers={name: pb.HeaderValues(values=values) for name, values in config.headers.items()},
        models=list(config.models),
        on_missing_credential=on_missing_number(config.on_missing_credential),
    )


def _response(view: ProviderView) -> pb.ProviderResponse:
    return pb.ProviderResponse(provider=provider_to_proto(view.provider), warnings=view.warnings)


def list_response_bytes(masked: Iterable[ProviderConfig]) -> bytes:
    """`ListProvidersResponse(providers=masked)` serialized one provider at a time
    (`serialized.concatenated`): where the list is built, off the event loop for a long one."""
    return concatenated(pb.ListProvidersResponse(providers=[provider_to_proto(p)]) for p in masked)


class ProviderServicer(providers_pb2_grpc.ProviderServiceServicer):
    def __init__(self, providers: ProviderBook) -> None:
        self._providers = providers

    async def CreateProvider(
        self, request: pb.CreateProviderRequest, context: grpc.aio.ServicerContext
    ) -> pb.ProviderResponse:
        config = provider_from_proto(request.provider)
        return _response(await self._providers.create(caller_name(), request.user_id, config))

    async def GetProvider(
        self, request: pb.GetProviderRequest, context: grpc.aio.ServicerContext
    ) -> pb.ProviderResponse:
        return _response(await self._providers.get(request.user_id, request.name))

    async def ListProviders(
        self, request: pb.ListProvidersRequest, context: grpc.aio.ServicerContext
    ) -> bytes:
        # Built and serialized where the providers are opened: off the event loop for a long
        # list (registered by `serialized.add_service`, which passes the bytes through).
        return await self._providers.get_all(request.user_id, list_response_bytes)

    async def UpdateProvider(
        self, request: pb.UpdateProviderRequest, context: grpc.aio.ServicerContext
    ) -> pb.ProviderResponse:
        config = provider_from_proto(request.provider)
        return _response(await self._providers.update(caller_name(), request.user_id, config))

    async def DeleteProvider(
        self, request: pb.DeleteProviderRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteProviderResponse:
        await self._providers.delete(caller_name(), request.user_id, request.name)
        return pb.DeleteProviderResponse(name=request.name)
