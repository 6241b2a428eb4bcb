"""CredentialService over gRPC."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Iterable

import grpc.aio
from aicreds.vault.v1 import credentials_pb2 as pb
from aicreds.vault.v1 import credentials_pb2_grpc

from services.common.errors import InvalidArgument
from services.vault.credential_hosts import CredentialHosts
from services.vault.credentials import CredentialMaps
from services.vault.resolve import Resolver
from services.vault.servicers import caller_name
from services.vault.servicers.providers import provider_to_proto
from services.vault.servicers.resolve_stream import answer_resolve_stream
from services.vault.servicers.serialized import concatenated


def credentials_response_bytes(pairs: Iterable[tuple[str, str]]) -> bytes:
    """`GetCredentialsResponse(credentials=dict(pairs))` serialized one pair at a time
    (`serialized.concatenated`): where the map is opened, off the event loop for a large one."""
    return concatenated(pb.GetCredentialsResponse(credentials={k: v}) for k, v in pairs)


class CredentialServicer(credentials_pb2_grpc.CredentialServiceServicer):
    def __init__(
        self, credentials: CredentialMaps, resolver: Resolver, hosts: CredentialHosts
    ) -> None:
        self._credentials = credentials
        self._resolver = resolver
        self._hosts = hosts
        self._draining = asyncio.Event()  # set by `drain`

    async def GetCredentials(
        self, request: pb.GetCredentialsRequest, context: grpc.aio.ServicerContext
    ) -> bytes:
        # Built and serialized where the map is decrypted: off the event loop for a large map
        # (registered by `serialized.add_service`, which passes the bytes through).
        return await self._credentials.get_all(
            caller_name(), request.user_id, credentials_response_bytes
        )

    async def ReplaceCredentials(
        self, request: pb.ReplaceCredentialsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReplaceCredentialsResponse:
        stored = await self._credentials.replace_all(
            caller_name(), request.user_id, dict(request.credentials)
        )
        return pb.ReplaceCredentialsResponse(credentials=stored)

    async def GetCredential(
        self, request: pb.GetCredentialRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetCredentialResponse:
        value = await self._credentials.get(caller_name(), request.user_id, request.key)
        return pb.GetCredentialResponse(key=request.key, value=value)

    async def PutCredential(
        self, request: pb.PutCredentialRequest, context: grpc.aio.ServicerContext
    ) -> pb.PutCredentialResponse:
        await self._credentials.put(caller_name(), request.user_id, request.key, request.value)
        return pb.PutCredentialResponse(key=request.key, value=request.value)

    async def DeleteCredential(
        self, request: pb.DeleteCredentialRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteCredentialResponse:
        await self._credentials.delete(caller_name(), request.user_id, request.key)
        return pb.DeleteCredentialResponse(key=request.key)

    async def DeleteCredentials(
        self, request: pb.DeleteCredentialsRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteCredentialsResponse:
        deleted = await self._credentials.delete_all(caller_name(), request.user_id)
        return pb.DeleteCredentialsResponse(deleted=deleted)

    async def Resolve(
        self, request: pb.ResolveRequest, context: grpc.aio.ServicerContext
    ) -> pb.ResolveResponse:
        return await self._resolve(caller_name(), request)

    async def ResolveStream(
        self,
        requests: AsyncIterator[pb.ResolveStreamRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.ResolveStreamResponse]:
        caller = caller_name()  # authenticated once, when the stream opened

        def resolve(request: pb.ResolveRequest) -> Awaitable[pb.ResolveResponse]:
            return self._resolve(caller, request)

        async for answer in answer_resolve_stream(requests, resolve, stop=self._draining):
            yield answer

    def drain(self) -> None:
        """The vault is stopping: each `ResolveStream` reads no further request, answers those
        it read and ends (OK; the router asks again, elsewhere, what it had sent since)."""
        self._draining.set()

    async def _resolve(self, caller: str, request: pb.ResolveRequest) -> pb.ResolveResponse:
        """One `Resolve` for `caller`, unary or on a stream."""
        target = request.WhichOneof("target")
        if target == "keys":
            resolution = await self._resolver.resolve_keys(
                caller, request.user_id, list(request.keys.keys)
            )
        elif target == "provider_name":
            resolution = await self._resolver.resolve_provider(
                caller, request.user_id, request.provider_name
            )
        elif target == "model":
            resolution = await self._resolver.resolve_model(caller, request.user_id, request.model)
        else:
            raise InvalidArgument("resolve needs one of keys, provider_name or model")
        return pb.ResolveResponse(
            provider=provider_to_proto(resolution.provider) if resolution.provider else None,
            values=resolution.values,
            missing_keys=resolution.missing_keys,
            upstream_model=resolution.upstream_model,
            value_hosts={
                key: pb.HostList(hosts=hosts) for key, hosts in resolution.value_hosts.items()
            },
        )

    async def GetCredentialHosts(
        self, request: pb.GetCredentialHostsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetCredentialHostsResponse:
        if request.key:
            bound = {request.key: await self._hosts.get(request.user_id, request.key)}
        else:
            bound = await self._hosts.get_all(request.user_id)
        return pb.GetCredentialHostsResponse(
            hosts={key: pb.HostList(hosts=hosts) for key, hosts in bound.items()}
        )

    async def SetCredentialHosts(
        self, request: pb.SetCredentialHostsRequest, context: grpc.aio.ServicerContext
    ) -> pb.SetCredentialHostsResponse:
        hosts = await self._hosts.set(
            caller_name(), request.user_id, request.key, list(request.hosts)
        )
        return pb.SetCredentialHostsResponse(key=request.key, hosts=hosts)
