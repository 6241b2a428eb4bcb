"""Errors the router raises, on top of `services.common.errors`.

    AicredsError (services.common.errors)
    ├── InvalidArgument
    │   └── BadInvokeRequest        invalid_argument     a malformed method, path, query or header
    ├── PermissionDenied
    │   └── EgressRefused           egress_denied        the upstream resolves to a refused address
    ├── FailedPrecondition
    │   ├── CredentialMissing       credential_not_found a referenced key is missing and the
    │   │                                                provider says on_missing_credential=error
    │   ├── CredentialNotAllowed    credential_not_allowed a referenced credential is bound to
    │   │                                                other hosts (SPEC 2.9) and the provider
    │   │                                                says on_missing_credential=error
    │   └── HeaderTooLarge          header_too_large     substituted headers would pass a bound
    │                                                    (ROUTER_MAX_HEADER*_BYTES)
    ├── Unavailable
    │   ├── UpstreamUnavailable     upstream_unavailable connect failure or connection lost
    │   │   └── UpstreamUnresolved  upstream_unavailable the upstream's name did not
    │   │                                                resolve (in time)
    │   └── VaultUnavailable        vault_unavailable    the vault did not answer
    └── DeadlineExceeded
        └── UpstreamTimeout         upstream_timeout     the upstream outlived the call's deadline,
                                                         or sent nothing within the first-byte or
                                                         idle timeout, or every connection to its
                                                         origin stayed busy

Messages are public (sent to the caller, logged): they may name a header, a credential key, a
host or an address, never a credential value. Errors the vault reports (provider or model not
found, ...) are re-raised as the matching common class with the vault's message and reason.
httpcore's and httpx's errors become these in one place, `transport/errors.py`.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.common import header_bounds
from services.common.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    Unavailable,
)


class BadInvokeRequest(InvalidArgument):
    reason = "invalid_argument"


class EgressRefused(PermissionDenied):
    reason = "egress_denied"


class CredentialMissing(FailedPrecondition):
    reason = "credential_not_found"

    def __init__(self, keys: Sequence[str]) -> None:
        names = ", ".join(keys)
        super().__init__(f"Credential not found: {names}")
        self.keys = tuple(keys)


class CredentialNotAllowed(FailedPrecondition):
    reason = "credential_not_allowed"

    def __init__(self, keys: Sequence[str]) -> None:
        names = ", ".join(keys)
        super().__init__(f"Credential not allowed for host: {names}")
        self.keys = tuple(keys)


class HeaderTooLarge(FailedPrecondition):
    """The provider's headers, substituted with the user's values, would pass a size bound: the
    stored configuration, not the call, is at fault (the message names the header)."""

    reason = header_bounds.REASON


class UpstreamUnavailable(Unavailable):
    reason = "upstream_unavailable"


class UpstreamUnresolved(UpstreamUnavailable):
    """The upstream's host name did not resolve (in time); `CheckUpstream` allows such a name."""


class VaultUnavailable(Unavailable):
    reason = "vault_unavailable"


class UpstreamTimeout(DeadlineExceeded):
    reason = "upstream_timeout"
