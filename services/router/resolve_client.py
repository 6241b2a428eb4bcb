"""The router's side of the vault's `CredentialService.Resolve`: gRPC in, domain types out.

Lookups go on long-lived `ResolveStream`s (`resolve_stream.py`) when the vault has them,
otherwise (and with tracing on) one unary `Resolve` each; answers and errors are the same.

Vault errors keep their public message and reason (`provider_not_found`, `model_not_found`,
...); an unreachable or slow vault is `VaultUnavailable`. The channel reconnects by itself, with
a short reconnect backoff so that calls succeed again soon after the vault comes back, without
restarting the router.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
import grpc.aio
from aicreds.vault.v1 import credentials_pb2, credentials_pb2_grpc, providers_pb2

from services.common import tracing
from services.common.error_reason import error_reason
from services.common.errors import (
    AicredsError,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
)
from services.common.grpc_handlers import CODE_BY_NUMBER
from services.common.grpc_server import ClientTls, open_channel
from services.common.request_context import current_request_id
from services.router.errors import VaultUnavailable
from services.router.invocation import ProviderConfig, ProviderKind, Resolution
from services.router.resolve_stream import (
    MAX_IN_FLIGHT,
    STREAMS,
    ResolveStreams,
    StreamEnded,
    StreamsUnsupported,
)

# After the vault was down, try again within a second or two rather than grpc's default of up
# to two minutes (the other channel options are open_channel's defaults).
RECONNECT_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
)

_PASSED_ON: dict[grpc.StatusCode, Callable[..., AicredsError]] = {
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
}


def open_vault_channel(target: str, token: str, tls: ClientTls | None = None) -> grpc.aio.Channel:
    """A channel to the vault, authenticated as the router, with a short reconnect backoff."""
    return open_channel(target, token, tls, options=RECONNECT_OPTIONS)


# An unspecified kind (never stored by the vault) is treated as the generic one.
_KINDS: dict[int, ProviderKind] = {
    providers_pb2.PROVIDER_KIND_OPENAI: "openai",
    providers_pb2.PROVIDER_KIND_ANTHROPIC: "anthropic",
}


def _provider(message: providers_pb2.Provider) -> ProviderConfig:
    return ProviderConfig(
        name=message.name,
        base_url=message.base_url,
        headers=tuple(
            (name, tuple(message.headers[name].values)) for name in sorted(message.headers)
        ),
        on_missing_error=(
            message.on_missing_credential == providers_pb2.ON_MISSING_CREDENTIAL_ERROR
        ),
        kind=_KINDS.get(message.kind, "custom"),
    )


def _vault_error(code: grpc.StatusCode, details: str, reason: str | None, where: str) -> Exception:
    """The router's error for a failed `Resolve`, unary or on a stream: the same for both."""
    if code in _PASSED_ON:
        return _PASSED_ON[code](details, reason=reason)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return VaultUnavailable(f"the credential vault{where} is unavailable; try again shortly")
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        # The router's own identity is at fault, not the caller's: not a 401/403.
        return Internal(
            f"the credential vault{where} refused the router ({code.name}); check "
            "ROUTER_VAULT_TOKEN_FILE and the vault's callers file (right 'resolve')",
            reason="vault_refused",
        )
    return Internal(f"the credential vault{where} failed ({code.name})")


def _resolution(reply: credentials_pb2.ResolveResponse) -> Resolution:
    if not reply.HasField("provider"):
        raise Internal("the vault's Resolve returned no provider")
    return Resolution(
        provider=_provider(reply.provider),
        values=dict(reply.values),
        missing_keys=tuple(reply.missing_keys),
        upstream_model=reply.upstream_model,
        value_hosts={key: tuple(reply.value_hosts[key].hosts) for key in reply.value_hosts},
    )


class ResolveClient:
    """Asks the vault for what one call needs, as the router (right `resolve` at the vault):
    on one of a few long-lived `ResolveStream`s (`resolve_stream`), or with the unary `Resolve`
    when tracing is on (each lookup then is a span of its own, under the call's trace), when the
    vault has no `ResolveStream`, or with `streams=0`. The same answers and errors either way."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        address: str = "",
        *,
        streams: int = STREAMS,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        """`channel` authenticates every call (`open_vault_channel`); `streams` (0: the unary
        `Resolve` only) and `max_in_flight` per stream as in `resolve_stream`."""
        self._stub = credentials_pb2_grpc.CredentialServiceStub(channel)
        self._address = address
        self._streams = (
            ResolveStreams(self._stub, streams=streams, max_in_flight=max_in_flight)
            if streams > 0
            else None
        )

    def __repr__(self) -> str:
        return f"ResolveClient(address={self._address!r})"

    async def resolve(
        self, user_id: str, *, provider_name: str | None, model: str | None, timeout: float
    ) -> Resolution:
        message = credentials_pb2.ResolveStreamRequest(request_id=current_request_id())
        request = message.request
        request.user_id = user_id
        if provider_name is not None:
            request.provider_name = provider_name
        elif model is not None:
            request.model = model
        where = f" at {self._address}" if self._address else ""
        if timeout <= 0:
            raise VaultUnavailable("no time was left to ask the vault")
        streams = self._streams
        if streams is not None and not tracing.active and streams.available():
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            try:
                answer = await streams.ask(message, timeout)
            except StreamsUnsupported:
                timeout = deadline - loop.time()  # nothing was resolved: ask the unary way
            except StreamEnded as ended:
                raise _vault_error(
                    ended.code or grpc.StatusCode.UNAVAILABLE, "", None, where
                ) from None
            except TimeoutError:
                raise _vault_error(grpc.StatusCode.DEADLINE_EXCEEDED, "", None, where) from None
            else:
                if answer.HasField("error"):
                    error = answer.error
                    code = CODE_BY_NUMBER.get(error.code, grpc.StatusCode.UNKNOWN)
                    raise _vault_error(code, error.message, error.reason or None, where)
                return _resolution(answer.response)
            if timeout <= 0:
                raise VaultUnavailable("no time was left to ask the vault")
        try:
            # The caller channel sends the RPC's request id on to the vault (open_channel).
            reply = await self._stub.Resolve(request, timeout=timeout)
        except grpc.aio.AioRpcError as err:
            raise _vault_error(
                err.code(), err.details() or "", error_reason(err.trailing_metadata()), where
            ) from None
        return _resolution(reply)

    async def aclose(self) -> None:
        """End the streams to the vault (the channel is the caller's to close)."""
        if self._streams is not None:
            await self._streams.aclose()
