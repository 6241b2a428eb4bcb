"""A provider check (issue 13, the web UI's Test button): the provider's model list, sent with
the user's current credentials, answered as an outcome rather than as the upstream's response.

The request goes through exactly what a call goes through (`Router.resolve`, `prepared_call`,
`Router.stream`): the same substitution and warnings, the same `on_missing_credential`, the same
header rules, the egress policy on the address actually connected to, the same log line. Only
the request is fixed (`GET` the model list, the cheapest read every kind of provider offers) and
the deadline shorter. The upstream's body is read, at most `MAX_DISCARDED_BODY` bytes of it, and
dropped: it is never returned nor logged. Messages name at most the upstream's host and port,
the status and credential key names.
"""

from __future__ import annotations

import asyncio
import datetime
import enum
import logging
from dataclasses import dataclass

from services.common.errors import InvalidArgument
from services.router.errors import (
    CredentialMissing,
    CredentialNotAllowed,
    EgressRefused,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from services.router.invocation import (
    InvokeCall,
    PreparedCall,
    ProviderKind,
    Router,
    prepared_call,
)

_log = logging.getLogger("aicreds.router")

#: The longest a check takes (vault included), whatever the caller's deadline: a Test button
#: that hangs for the upstream's full timeout tells the user nothing more.
CHECK_TIMEOUT = 10.0

#: The most body bytes read before the connection is closed instead: reading a short body to its
#: end lets the connection be reused; a model list is a few KiB, not megabytes.
MAX_DISCARDED_BODY = 64 * 1024

#: Path of the model list, appended to the base URL. OpenAI base URLs end with the version
#: (`https://api.openai.com/v1`), Anthropic ones stop at the host (`https://api.anthropic.com`),
#: as the gateway's `openai_upstream_path` and `anthropic_upstream_path` assume.
MODEL_LIST_PATHS: dict[ProviderKind, str] = {
    "openai": "/models",
    "custom": "/models",
    "anthropic": "/v1/models",
}

#: Anthropic's API answers 400 without `anthropic-version`; sent only if the provider's own
#: headers do not set it (the provider's headers win, as for a call's client headers).
ANTHROPIC_VERSION = ("anthropic-version", "2023-06-01")


class CheckOutcome(enum.Enum):
    """What a check found (the proto's `CheckOutcome`)."""

    ACCEPTED = "accepted"
    KEY_REJECTED = "key_rejected"
    UNREACHABLE = "unreachable"
    REFUSED_BY_POLICY = "refused_by_policy"
    UPSTREAM_ERROR = "upstream_error"
    CREDENTIAL_MISSING = "credential_missing"


@dataclass(frozen=True)
class ProviderCheck:
    """The outcome of one check; `status` is 0 when the upstream answered nothing."""

    outcome: CheckOutcome
    status: int
    message: str
    warnings: tuple[str, ...]
    checked_at: datetime.datetime


def model_list_call(user_id: str, provider_name: str, kind: ProviderKind) -> InvokeCall:
    """The request a check sends for a provider of `kind`."""
    headers = (ANTHROPIC_VERSION,) if kind == "anthropic" else ()
    return InvokeCall(
        user_id=user_id,
        provider_name=provider_name,
        model=None,
        method="GET",
        path=MODEL_LIST_PATHS[kind],
        headers=headers,
    )


def outcome_of_status(status: int) -> CheckOutcome:
    if 200 <= status < 300:
        return CheckOutcome.ACCEPTED
    if status in (401, 403):
        return CheckOutcome.KEY_REJECTED
    return CheckOutcome.UPSTREAM_ERROR


def _answered(host: str, status: int) -> tuple[CheckOutcome, str]:
    outcome = outcome_of_status(status)
    if outcome is CheckOutcome.ACCEPTED:
        return outcome, f"{host} answered {status}: reachable, and the key was accepted"
    if outcome is CheckOutcome.KEY_REJECTED:
        return outcome, f"{host} answered {status}: the key was rejected"
    return outcome, f"{host} answered {status} to the model list"


class ProviderChecker:
    """Runs provider checks through a `Router`."""

    def __init__(self, router: Router, timeout: float = CHECK_TIMEOUT) -> None:
        self._router = router
        self._timeout = timeout

    async def check(self, user_id: str, provider_name: str, *, deadline: float) -> ProviderCheck:
        """Send `provider_name`'s model list for `user_id` and say how that went.

        Raises:
            InvalidArgument: no provider name.
            NotFound: no such provider (the vault's answer).
            VaultUnavailable: the vault did not answer.
            BadInvokeRequest: a provider header that HTTP cannot carry.
        """
        if not provider_name:
            raise InvalidArgument("provider_name is required")
        deadline = min(deadline, asyncio.get_running_loop().time() + self._timeout)
        resolution = await self._router.resolve(user_id, provider_name, None, deadline=deadline)
        provider = resolution.provider
        call = model_list_call(user_id, provider.name, provider.kind)
        try:
            prepared = prepared_call(call, resolution, self._router.header_bounds)
        except UpstreamUnavailable as err:  # a base URL the router cannot send to
            return self._result(provider.name, CheckOutcome.UNREACHABLE, 0, err.message, ())
        outcome, status, message = await self._send(prepared, deadline)
        return self._result(provider.name, outcome, status, message, prepared.warnings)

    async def _send(self, prepared: PreparedCall, deadline: float) -> tuple[CheckOutcome, int, str]:
        target = prepared.target
        host = target.host if target.default_port else f"{target.host}:{target.port}"
        try:
            prepared.check_missing()
        except (CredentialMissing, CredentialNotAllowed) as err:
            # A credential bound to other hosts is treated like a missing one (SPEC 2.9).
            return CheckOutcome.CREDENTIAL_MISSING, 0, f"{err.message}; nothing was sent"
        status = 0
        try:
            async with self._router.stream(prepared, deadline=deadline) as response:
                status = response.status
                received = 0
                async for chunk in response.chunks():
                    received += len(chunk)
                    if received > MAX_DISCARDED_BODY:
                        break  # leaving `stream` unread closes the connection
        except EgressRefused:
            return (
                CheckOutcome.REFUSED_BY_POLICY,
                0,
                f"the router's egress policy refuses {host}; nothing was sent (an operator can"
                " allow it with ROUTER_EGRESS_ALLOW)",
            )
        except (UpstreamUnavailable, UpstreamTimeout) as err:
            # Once the head arrived, its status is the answer, even if the body then failed.
            if not status:
                timed_out = isinstance(err, UpstreamTimeout)
                why = "did not answer in time" if timed_out else "could not be reached"
                return CheckOutcome.UNREACHABLE, 0, f"{host} {why}"
        outcome, message = _answered(host, status)
        return outcome, status, message

    def _result(
        self,
        provider_name: str,
        outcome: CheckOutcome,
        status: int,
        message: str,
        warnings: tuple[str, ...],
    ) -> ProviderCheck:
        _log.info(
            "provider check",
            extra={
                "fields": {"provider": provider_name, "outcome": outcome.value, "status": status}
            },
        )
        return ProviderCheck(
            outcome, status, message, warnings, datetime.datetime.now(datetime.UTC)
        )
