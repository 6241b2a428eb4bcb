"""Errors every service raises from its domain code.

    AicredsError                 kind              typical reason (REST error code)
    ├── InvalidArgument          invalid_argument  invalid_argument
    ├── Unauthenticated          unauthenticated   unauthorized
    ├── PermissionDenied         permission_denied forbidden, egress_denied
    ├── NotFound                 not_found         credential_not_found, provider_not_found, ...
    ├── AlreadyExists            already_exists    provider_exists
    ├── FailedPrecondition       failed_precondition credential_not_found (router, on_missing=error)
    ├── ResourceExhausted        resource_exhausted rate_limited
    ├── Unavailable              unavailable       vault_unavailable, upstream_unavailable
    ├── DeadlineExceeded         deadline_exceeded upstream_timeout
    └── Internal                 internal          internal

`kind` decides the gRPC status (mapped in one place: `services.common.grpc_handlers`); `reason`
travels in trailing metadata `x-error-reason` and becomes the REST error code at the gateway.

The message of an AicredsError is **public**: it is sent to the caller and logged. It may name a
credential key, a provider or a header; it must never hold a credential value, token or key.
Domain code never imports grpc.
"""

from __future__ import annotations

from typing import ClassVar


class AicredsError(Exception):
    """Base of every error whose message may be shown to the caller."""

    kind: ClassVar[str] = "internal"
    reason: str = "internal"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reason={self.reason!r}, message={self.message!r})"


class InvalidArgument(AicredsError):
    kind = "invalid_argument"
    reason = "invalid_argument"


class Unauthenticated(AicredsError):
    kind = "unauthenticated"
    reason = "unauthorized"


class PermissionDenied(AicredsError):
    kind = "permission_denied"
    reason = "forbidden"


class NotFound(AicredsError):
    kind = "not_found"
    reason = "not_found"


class AlreadyExists(AicredsError):
    kind = "already_exists"
    reason = "already_exists"


class FailedPrecondition(AicredsError):
    kind = "failed_precondition"
    reason = "failed_precondition"


class ResourceExhausted(AicredsError):
    kind = "resource_exhausted"
    reason = "rate_limited"


class Unavailable(AicredsError):
    kind = "unavailable"
    reason = "unavailable"


class DeadlineExceeded(AicredsError):
    kind = "deadline_exceeded"
    reason = "deadline_exceeded"


class Internal(AicredsError):
    kind = "internal"
    reason = "internal"
