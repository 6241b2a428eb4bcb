"""`aicreds.router.v1.RouterService`: converts messages, calls `Router`, converts back.

Caller authentication, the `invoke` right and the mapping of errors to statuses are done by the
shared interceptor (`services.common.grpc_handlers`). What is specific here:

- credential warnings go into trailing metadata `x-credential-warning`, one entry each, also
  when the call then fails (for `Invoke` into initial metadata too, ahead of the head; for
  `InvokeBuffered` into its answer), and into a log line, with key names only;
- the caller's deadline bounds the call;
- a cancelled RPC closes the upstream connection at once.

`CheckProvider` reports the warnings the same way, in its answer too (`provider_check.py`).

`Invoke` and `InvokeBuffered` share everything up to the upstream's answer (`_prepare`); the one
streams it, the other returns it whole (`Router.fetch`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Sequence

import grpc.aio
from aicreds.router.v1 import router_pb2, router_pb2_grpc
from google.protobuf.timestamp_pb2 import Timestamp

from services.common.invoke_streams import CREDENTIAL_WARNING_KEY
from services.router.invocation import MAX_BUFFERED_BODY, InvokeCall, PreparedCall, Router
from services.router.provider_check import CheckOutcome, ProviderChecker

_OUTCOMES = {
    CheckOutcome.ACCEPTED: router_pb2.CHECK_OUTCOME_ACCEPTED,
    CheckOutcome.KEY_REJECTED: router_pb2.CHECK_OUTCOME_KEY_REJECTED,
    CheckOutcome.UNREACHABLE: router_pb2.CHECK_OUTCOME_UNREACHABLE,
    CheckOutcome.REFUSED_BY_POLICY: router_pb2.CHECK_OUTCOME_REFUSED_BY_POLICY,
    CheckOutcome.UPSTREAM_ERROR: router_pb2.CHECK_OUTCOME_UPSTREAM_ERROR,
    CheckOutcome.CREDENTIAL_MISSING: router_pb2.CHECK_OUTCOME_CREDENTIAL_MISSING,
}
_log = logging.getLogger("aicreds.router")


async def _report_warnings(
    context: grpc.aio.ServicerContext,
    provider: str,
    warnings: Sequence[str],
    *,
    ahead_of_the_answer: bool,
) -> None:
    """Trailing metadata as the proto says; with `ahead_of_the_answer` initial metadata too, so
    that an HTTP edge can turn them into response headers before the first byte of a streamed
    body."""
    if not warnings:
        return
    metadata = tuple((CREDENTIAL_WARNING_KEY, w) for w in warnings)
    context.set_trailing_metadata(metadata)
    if ahead_of_the_answer:
        await context.send_initial_metadata(metadata)
    _log.warning(
        "credential warnings",
        extra={"fields": {"provider": provider, "warnings": list(warnings)}},
    )


def _invoke_call(request: router_pb2.InvokeRequest) -> InvokeCall:
    target = request.WhichOneof("target")
    return InvokeCall(
        user_id=request.user_id,
        provider_name=request.provider_name if target == "provider_name" else None,
        model=request.model if target == "model" else None,
        method=request.method,
        path=request.path,
        query=request.query,
        headers=tuple((h.name, h.value) for h in request.headers),
        body=request.body,
    )


class RouterServicer(router_pb2_grpc.RouterServiceServicer):
    def __init__(self, router: Router, checker: ProviderChecker, default_timeout: float) -> None:
        self._router = router
        self._checker = checker
        self._default_timeout = default_timeout

    def _deadline(self, context: grpc.aio.ServicerContext) -> float:
        """The caller's deadline as a loop time, or the router's default for calls without one."""
        remaining: float | None = context.time_remaining()
        if remaining is None:
            remaining = self._default_timeout
        return asyncio.get_running_loop().time() + remaining

    async def _prepare(
        self,
        request: router_pb2.InvokeRequest,
        context: grpc.aio.ServicerContext,
        *,
        deadline: float,
        streamed: bool,
    ) -> PreparedCall:
        """Resolve and substitute, then report the warnings (also if the call then fails)."""
        prepared = await self._router.prepare(_invoke_call(request), deadline=deadline)
        await _report_warnings(
            context, prepared.provider_name, prepared.warnings, ahead_of_the_answer=streamed
        )
        return prepared

    async def Invoke(  # noqa: N802 - the RPC's name
        self, request: router_pb2.InvokeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncGenerator[router_pb2.InvokeResponse, None]:
        deadline = self._deadline(context)
        prepared = await self._prepare(request, context, deadline=deadline, streamed=True)
        async with self._router.stream(prepared, deadline=deadline) as upstream:
            # If the RPC ends while this generator is parked at a `yield` (so the cancellation
            # is raised in grpc's code, not here), close the upstream from the callback.
            context.add_done_callback(lambda _: upstream.abort())
            yield router_pb2.InvokeResponse(
                head=router_pb2.ResponseHead(
                    status=upstream.status,
                    headers=[router_pb2.Header(name=n, value=v) for n, v in upstream.headers],
                )
            )
            async for chunk in upstream.chunks():
                yield router_pb2.InvokeResponse(chunk=chunk)

    async def InvokeBuffered(  # noqa: N802 - the RPC's name
        self, request: router_pb2.InvokeBufferedRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.InvokeBufferedResponse:
        # A cancelled RPC cancels this coroutine, which leaves `Router.stream` and so closes
        # the upstream connection: no callback needed, unlike Invoke's generator.
        deadline = self._deadline(context)
        prepared = await self._prepare(request.call, context, deadline=deadline, streamed=False)
        limit = request.max_body_bytes
        answer = await self._router.fetch(
            prepared,
            deadline=deadline,
            max_body=limit if 0 < limit < MAX_BUFFERED_BODY else MAX_BUFFERED_BODY,
        )
        return router_pb2.InvokeBufferedResponse(
            head=router_pb2.ResponseHead(
                status=answer.status,
                headers=[router_pb2.Header(name=n, value=v) for n, v in answer.headers],
            ),
            body=answer.body,
            warnings=prepared.warnings,
        )

    async def CheckUpstream(  # noqa: N802 - the RPC's name
        self, request: router_pb2.CheckUpstreamRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.CheckUpstreamResponse:
        check = await self._router.check_upstream(
            request.base_url, deadline=self._deadline(context)
        )
        return router_pb2.CheckUpstreamResponse(
            allowed=check.allowed, reason=check.reason, resolved=check.resolved
        )

    async def Preview(  # noqa: N802 - the RPC's name
        self, request: router_pb2.PreviewRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.PreviewResponse:
        result = await self._router.preview(
            request.user_id, request.provider_name, deadline=self._deadline(context)
        )
        return router_pb2.PreviewResponse(
            headers=[router_pb2.Header(name=n, value=v) for n, v in result.headers],
            warnings=list(result.warnings),
        )

    async def CheckProvider(  # noqa: N802 - the RPC's name
        self, request: router_pb2.CheckProviderRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.CheckProviderResponse:
        check = await self._checker.check(
            request.user_id, request.provider_name, deadline=self._deadline(context)
        )
        await _report_warnings(
            context, request.provider_name, check.warnings, ahead_of_the_answer=False
        )
        checked_at = Timestamp()
        checked_at.FromDatetime(check.checked_at)
        return router_pb2.CheckProviderResponse(
            outcome=_OUTCOMES[check.outcome],
            status=check.status,
            message=check.message,
            warnings=list(check.warnings),
            checked_at=checked_at,
        )
