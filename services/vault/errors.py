"""Errors the vault raises.

    AicredsError (services.common.errors)     gRPC status          reason (REST error code)
    ├── InvalidArgument                       INVALID_ARGUMENT     invalid_argument
    ├── NotFound
    │   ├── CredentialNotFound                NOT_FOUND            credential_not_found
    │   ├── ProviderNotFound                  NOT_FOUND            provider_not_found
    │   └── ModelNotFound                     NOT_FOUND            model_not_found
    ├── AlreadyExists
    │   └── ProviderExists                    ALREADY_EXISTS       provider_exists
    ├── ResourceExhausted
    │   └── LimitExceeded                     RESOURCE_EXHAUSTED   limit_exceeded
    ├── Unavailable
    │   └── DatabaseUnavailable               UNAVAILABLE          database_unavailable
    └── Internal
        ├── DecryptionFailed                  INTERNAL             decryption_failed
        ├── ProviderIntegrityError            INTERNAL             integrity_error
        └── UnknownMasterKey                  INTERNAL             unknown_master_key

    StartupRefused (plain Exception)          the process exits with its message

Messages are public (sent to callers, logged): they may name a user, a credential key, a
provider or a master key id, never a value, a token or key material. `StartupRefused` is for the
operator and says what to do.
"""

from __future__ import annotations

from services.common.errors import (
    AlreadyExists,
    Internal,
    NotFound,
    ResourceExhausted,
    Unavailable,
)


class CredentialNotFound(NotFound):
    reason = "credential_not_found"


class ProviderNotFound(NotFound):
    reason = "provider_not_found"


class ModelNotFound(NotFound):
    reason = "model_not_found"


class ProviderExists(AlreadyExists):
    reason = "provider_exists"


class LimitExceeded(ResourceExhausted):
    """A write would take a user over one of their storage limits (`user_limits`). A quota,
    not a rate: retrying does not help until the user deletes something."""

    reason = "limit_exceeded"


class DatabaseUnavailable(Unavailable):
    """The database server could not be reached, dropped the connection, or did not answer
    within the statement timeout (PostgreSQL). Nothing was changed that the caller was told
    of; retrying (on this or another replica) may succeed."""

    reason = "database_unavailable"


class DecryptionFailed(Internal):
    """A stored blob is corrupt, truncated, of an unknown version, or not for this place."""

    reason = "decryption_failed"


class ProviderIntegrityError(Internal):
    """A provider's configuration does not match its sealed headers: the row was changed in the
    database without the keyring (or is damaged). The provider is refused, never used."""

    reason = "integrity_error"


class UnknownMasterKey(Internal):
    """A stored blob names a master key that the keyring file does not hold."""

    reason = "unknown_master_key"


class StartupRefused(Exception):
    """The vault cannot start with this configuration; the message tells the operator why."""
