"""Persistent gRPC channels to the vault and the router, with a deadline on every call.

A `Backend` owns one channel (opened at application start, closed at shutdown) and turns every
failed call into an `ApiError` through the one table in `errors.py`. The channel
(`services.common.grpc_server.open_channel`) adds the caller token and the current request id
(`x-request-id`, from `services.common.request_context`) to every call, so no call here passes
metadata of its own. `VaultClient` adds typed methods for the RPCs the REST API needs;
`RouterClient` exposes the router stub for the model endpoints, sends their non-streamed calls
on a few long-lived streams (`router_streams`), and checks a provider's base URL against the
egress policy.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc
import grpc.aio
from aicreds.router.v1 import router_pb2, router_pb2_grpc
from aicreds.vault.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    auth_pb2,
    auth_pb2_grpc,
    credentials_pb2,
    credentials_pb2_grpc,
    providers_pb2,
    providers_pb2_grpc,
    usage_pb2,
    usage_pb2_grpc,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common import tracing
from services.common.callers import read_secret_file
from services.common.grpc_server import ClientTls, open_channel
from services.gateway.errors import from_rpc_error
from services.gateway.router_streams import (
    STREAM_BODY_LIMIT,
    BufferedCall,
    RouterStreams,
    StreamCall,
)

Reply = TypeVar("Reply")


class Backend:
    """One gRPC backend: its channel, deadline and error translation."""

    name = "backend"

    def __init__(
        self, target: str, token_file: Path, tls: ClientTls | None, timeout: float
    ) -> None:
        self.target = target
        self.timeout = timeout
        self._token_file = token_file
        self._tls = tls
        self._channel: grpc.aio.Channel | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(target={self.target!r})"

    @property
    def channel(self) -> grpc.aio.Channel:
        if self._channel is None:
            raise RuntimeError(f"{self.name} channel is not open")
        return self._channel

    async def open(self) -> None:
        """Read the caller token and open the channel (lazily connecting)."""
        token = read_secret_file(self._token_file)
        self._channel = open_channel(self.target, token, self._tls)
        self._bind(self._channel)

    def _bind(self, channel: grpc.aio.Channel) -> None:
        """Create the stubs; subclasses override."""

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def call(
        self, rpc: Callable[..., Awaitable[Reply]], request: Any, *, timeout: float | None = None
    ) -> Reply:
        """Make one unary call with the deadline (`timeout`, else the backend's); a failure
        raises the mapped `ApiError`."""
        try:
            return await rpc(request, timeout=timeout or self.timeout)
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err, self.name) from None

    async def is_serving(self, timeout: float = 1.0) -> bool:
        """Whether the backend answers `grpc.health.v1` with SERVING within `timeout`."""
        stub = health_pb2_grpc.HealthStub(self.channel)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


class VaultClient(Backend):
    """The vault RPCs the REST API uses, typed."""

    name = "vault"

    def _bind(self, channel: grpc.aio.Channel) -> None:
        self._credentials = credentials_pb2_grpc.CredentialServiceStub(channel)
        self._providers = providers_pb2_grpc.ProviderServiceStub(channel)
        self._auth = auth_pb2_grpc.AuthServiceStub(channel)

    # Credentials (SPEC 2.2)

    async def get_credentials(self, user_id: str) -> dict[str, str]:
        request = credentials_pb2.GetCredentialsRequest(user_id=user_id)
        reply = await self.call(self._credentials.GetCredentials, request)
        return dict(reply.credentials)

    async def replace_credentials(
        self, user_id: str, credentials: Mapping[str, str]
    ) -> dict[str, str]:
        request = credentials_pb2.ReplaceCredentialsRequest(
            user_id=user_id, credentials=dict(credentials)
        )
        reply = await self.call(self._credentials.ReplaceCredentials, request)
        return dict(reply.credentials)

    async def delete_credentials(self, user_id: str) -> int:
        request = credentials_pb2.DeleteCredentialsRequest(user_id=user_id)
        reply = await self.call(self._credentials.DeleteCredentials, request)
        return int(reply.deleted)

    async def get_credential(self, user_id: str, key: str) -> str:
        request = credentials_pb2.GetCredentialRequest(user_id=user_id, key=key)
        reply = await self.call(self._credentials.GetCredential, request)
        return str(reply.value)

    async def put_credential(self, user_id: str, key: str, value: str) -> str:
        request = credentials_pb2.PutCredentialRequest(user_id=user_id, key=key, value=value)
        reply = await self.call(self._credentials.PutCredential, request)
        return str(reply.value)

    async def delete_credential(self, user_id: str, key: str) -> None:
        request = credentials_pb2.DeleteCredentialRequest(user_id=user_id, key=key)
        await self.call(self._credentials.DeleteCredential, request)

    # Credential host binding (SPEC 2.9)

    async def get_credential_hosts(self, user_id: str, key: str = "") -> dict[str, list[str]]:
        """Bound key -> hosts; with `key`, only that key (NOT_FOUND if it is not in the map)."""
        request = credentials_pb2.GetCredentialHostsRequest(user_id=user_id, key=key)
        reply = await self.call(self._credentials.GetCredentialHosts, request)
        return {name: list(reply.hosts[name].hosts) for name in sorted(reply.hosts)}

    async def set_credential_hosts(self, user_id: str, key: str, hosts: Sequence[str]) -> list[str]:
        request = credentials_pb2.SetCredentialHostsRequest(
            user_id=user_id, key=key, hosts=list(hosts)
        )
        reply = await self.call(self._credentials.SetCredentialHosts, request)
        return list(reply.hosts)

    # Providers (SPEC 2.3)

    async def list_providers(self, user_id: str) -> list[providers_pb2.Provider]:
        request = providers_pb2.ListProvidersRequest(user_id=user_id)
        reply = await self.call(self._providers.ListProviders, request)
        return list(reply.providers)

    async def get_provider(self, user_id: str, name: str) -> providers_pb2.ProviderResponse:
        request = providers_pb2.GetProviderRequest(user_id=user_id, name=name)
        return await self.call(self._providers.GetProvider, request)

    async def create_provider(
        self, user_id: str, provider: providers_pb2.Provider
    ) -> providers_pb2.ProviderResponse:
        request = providers_pb2.CreateProviderRequest(user_id=user_id, provider=provider)
        return await self.call(self._providers.CreateProvider, request)

    async def update_provider(
        self, user_id: str, provider: providers_pb2.Provider
    ) -> providers_pb2.ProviderResponse:
        request = providers_pb2.UpdateProviderRequest(user_id=user_id, provider=provider)
        return await self.call(self._providers.UpdateProvider, request)

    async def delete_provider(self, user_id: str, name: str) -> None:
        request = providers_pb2.DeleteProviderRequest(user_id=user_id, name=name)
        await self.call(self._providers.DeleteProvider, request)

    # Tokens and sessions (SPEC 2.4, 2.5)

    async def create_token(
        self,
        user_id: str,
        name: str,
        scopes: list[str],
        expires_in: int,
        *,
        parent_token_id: str,
        parent_session_id: str = "",
    ) -> auth_pb2.CreateTokenResponse:
        """Mint a token on behalf of the principal that authenticated the request: its token
        (`parent_token_id`) and, for a cookie session, the session. The vault caps the child's
        expiry and scopes at the parent's and revokes the child with it."""
        request = auth_pb2.CreateTokenRequest(
            user_id=user_id,
            name=name,
            scopes=scopes,
            expires_in_seconds=expires_in,
            parent_token_id=parent_token_id,
            parent_session_id=parent_session_id,
        )
        return await self.call(self._auth.CreateToken, request)

    async def list_tokens(self, user_id: str) -> list[auth_pb2.TokenInfo]:
        request = auth_pb2.ListTokensRequest(user_id=user_id)
        reply = await self.call(self._auth.ListTokens, request)
        return list(reply.tokens)

    async def revoke_token(self, user_id: str, token_id: str) -> auth_pb2.TokenInfo:
        request = auth_pb2.RevokeTokenRequest(user_id=user_id, token_id=token_id)
        return await self.call(self._auth.RevokeToken, request)

    async def create_session(
        self, user_id: str, token_id: str, ttl_seconds: int
    ) -> auth_pb2.CreateSessionResponse:
        request = auth_pb2.CreateSessionRequest(
            user_id=user_id, token_id=token_id, ttl_seconds=ttl_seconds
        )
        return await self.call(self._auth.CreateSession, request)

    async def revoke_session(self, user_id: str, session: str) -> bool:
        request = auth_pb2.RevokeSessionRequest(user_id=user_id, session=session)
        reply = await self.call(self._auth.RevokeSession, request)
        return bool(reply.revoked)

    async def authenticate(
        self, *, token: str | None = None, session: str | None = None
    ) -> auth_pb2.AuthenticateResponse:
        if session is not None:
            request = auth_pb2.AuthenticateRequest(session=session)
        else:
            request = auth_pb2.AuthenticateRequest(token=token or "")
        return await self.call(self._auth.Authenticate, request)

    # Audit (SPEC 2.8: the user's own recent activity)

    async def list_audit_events(
        self, user_id: str, *, limit: int, before_id: int = 0
    ) -> list[audit_pb2.AuditEvent]:
        """Up to `limit` of the user's audit events, newest first, with ids below `before_id`
        (0: from the newest). Names only: the vault records no values."""
        # The stub is made here rather than in `_bind`: it is a few attribute lookups, and this
        # RPC serves one screen of the web UI, not a hot path.
        stub = audit_pb2_grpc.AuditServiceStub(self.channel)
        request = audit_pb2.ListAuditEventsRequest(
            user_id=user_id, limit=limit, before_id=before_id
        )
        reply = await self.call(stub.ListAuditEvents, request)
        return list(reply.events)

    # Usage (issue 18: the user's own token totals per day, provider and model)

    async def get_usage(self, user_id: str, from_day: str, to_day: str) -> list[usage_pb2.UsageRow]:
        """The user's daily totals from `from_day` to `to_day` (`YYYY-MM-DD`, both included),
        by day, provider and model."""
        stub = usage_pb2_grpc.UsageServiceStub(self.channel)  # one screen's call, as above
        request = usage_pb2.GetUsageRequest(user_id=user_id, from_day=from_day, to_day=to_day)
        reply = await self.call(stub.GetUsage, request)
        return list(reply.rows)


#: Deadline of `CheckUpstream`: it resolves a host name (within the router's connect timeout,
#: 10 s by default) and answers; a model call's long deadline does not apply to it.
CHECK_UPSTREAM_TIMEOUT = 15.0
#: Deadline of `CheckProvider`: the router sends one small request upstream under its own short
#: deadline; this bounds the whole check even when the router's is longer.
CHECK_PROVIDER_TIMEOUT = 30.0


class RouterClient(Backend):
    """The router: `stub` is `RouterServiceStub`; calls should use `timeout` as deadline."""

    name = "router"
    _streams: RouterStreams | None = None

    def _bind(self, channel: grpc.aio.Channel) -> None:
        self.stub = router_pb2_grpc.RouterServiceStub(channel)
        self._streams = RouterStreams(self.stub, self._unary_buffered, self._unary_invoke)

    def _unary_buffered(
        self, request: router_pb2.InvokeBufferedRequest, timeout: float
    ) -> BufferedCall:
        call: BufferedCall = self.stub.InvokeBuffered(request, timeout=timeout)
        return call

    def _unary_invoke(self, request: router_pb2.InvokeRequest, timeout: float) -> StreamCall:
        call: StreamCall = self.stub.Invoke(request, timeout=timeout)
        return call

    def _streams_for(self, body: bytes) -> RouterStreams | None:
        """The streams, if a call with `body` may go on one: not with tracing on (a unary call
        carries its span) nor for a large body (it would hold up the calls behind it)."""
        if tracing.active or len(body) > STREAM_BODY_LIMIT:
            return None
        return self._streams

    def invoke_stream(self, request: router_pb2.InvokeRequest, timeout: float) -> StreamCall:
        """A streamed model call, to end within `timeout` seconds: on one of the long-lived
        streams, or as a unary-stream `Invoke` under the same conditions as `invoke_buffered`."""
        streams = self._streams_for(request.body)
        if streams is not None:
            call = streams.start_stream(request, timeout)
            if call is not None:
                return call
        return self._unary_invoke(request, timeout)

    def invoke_buffered(
        self, request: router_pb2.InvokeBufferedRequest, timeout: float
    ) -> BufferedCall:
        """A non-streamed model call, answered within `timeout` seconds: on one of the
        long-lived streams, or as a unary `InvokeBuffered` when tracing is on (a unary call
        carries its span), its body is large, or no stream can take it now."""
        streams = self._streams_for(request.call.body)
        if streams is not None:
            call = streams.start(request, timeout)
            if call is not None:
                return call
        return self._unary_buffered(request, timeout)

    async def close(self) -> None:
        """End the streams (their calls in flight fail), then close the channel."""
        streams, self._streams = self._streams, None
        if streams is not None:
            await streams.aclose()
        await super().close()

    async def check_upstream(self, base_url: str) -> router_pb2.CheckUpstreamResponse:
        """The router's egress policy on `base_url` (SPEC 2.3); nothing is sent upstream."""
        request = router_pb2.CheckUpstreamRequest(base_url=base_url)
        return await self.call(
            self.stub.CheckUpstream, request, timeout=min(self.timeout, CHECK_UPSTREAM_TIMEOUT)
        )

    async def check_provider(
        self, user_id: str, provider_name: str
    ) -> router_pb2.CheckProviderResponse:
        """The router's test of a provider with the user's current credentials: an outcome,
        the upstream's status and a sentence, never the upstream's body."""
        request = router_pb2.CheckProviderRequest(user_id=user_id, provider_name=provider_name)
        return await self.call(
            self.stub.CheckProvider, request, timeout=min(self.timeout, CHECK_PROVIDER_TIMEOUT)
        )
