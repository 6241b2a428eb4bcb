"""Per-user storage limits (SPEC 4.8): how much one user may keep in the vault.

One user must not be able to exhaust the vault for everyone: every provider they save is read
by `Resolve` and listed by `ListProviders`, every credential is read and decrypted by
`GetCredentials`. So the number of providers, their total stored size and the total size of
the credential map are bounded. The number of credentials is not (SPEC 2.2): only their bytes.

The store measures what the user already has inside the write transaction and calls these
checks there, so two concurrent writes cannot both slip under a limit. A refused write writes
nothing and raises `LimitExceeded` (RESOURCE_EXHAUSTED, reason `limit_exceeded`), whose message
names the limit, its value and its setting, never a value.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.vault import crypto
from services.vault.errors import LimitExceeded

DEFAULT_MAX_PROVIDERS = 200
DEFAULT_MAX_PROVIDER_BYTES = 1024 * 1024
DEFAULT_MAX_CREDENTIAL_BYTES = 8 * 1024 * 1024

# A sealed blob's bytes beyond its plaintext: version, key id length, nonce, GCM tag (the key
# id itself is counted from the blob: see `plaintext_size`).
_SEAL_OVERHEAD = 2 + crypto.NONCE_SIZE + crypto.TAG_SIZE


@dataclass(frozen=True)
class UserLimits:
    """The limits; `VaultSettings` reads them from `VAULT_MAX_*`."""

    max_providers: int = DEFAULT_MAX_PROVIDERS
    max_provider_bytes: int = DEFAULT_MAX_PROVIDER_BYTES
    max_credential_bytes: int = DEFAULT_MAX_CREDENTIAL_BYTES


@dataclass(frozen=True)
class ProviderUsage:
    """A user's other providers (all but the one being written): how many, how many bytes."""

    count: int
    stored_bytes: int


def plaintext_size(blob: bytes) -> int:
    """The plaintext length of a sealed blob (`services.vault.crypto` format 1), without
    opening it."""
    return len(blob) - _SEAL_OVERHEAD - (blob[1] if len(blob) > 1 else 0)


def provider_size(name: str, base_url: str, models_json: str, headers_blob: bytes) -> int:
    """What a stored provider counts against `max_provider_bytes`: the UTF-8 bytes of its name,
    base URL, models (as stored, a JSON list) and headers (as configured, not as sealed)."""
    return (
        len(name.encode())
        + len(base_url.encode())
        + len(models_json.encode())
        + plaintext_size(headers_blob)
    )


def check_provider_write(
    limits: UserLimits, others: ProviderUsage, size: int, *, creating: bool
) -> None:
    """Refuse a provider write that would take the user over a provider limit.

    Raises:
        LimitExceeded: creating one more than `max_providers`, or the providers' total size
            (the others plus this one, `size` bytes) over `max_provider_bytes`.
    """
    if creating and others.count + 1 > limits.max_providers:
        raise LimitExceeded(
            f"a user keeps at most {limits.max_providers} providers (VAULT_MAX_PROVIDERS)"
        )
    if others.stored_bytes + size > limits.max_provider_bytes:
        raise LimitExceeded(
            f"a user's providers take at most {limits.max_provider_bytes} bytes in total"
            f" (VAULT_MAX_PROVIDER_BYTES); this change would make {others.stored_bytes + size}"
        )


def check_credential_map(limits: UserLimits, total_bytes: int) -> None:
    """Refuse a credential map whose keys and values (UTF-8 bytes) would exceed the limit.

    Raises:
        LimitExceeded: `total_bytes` over `max_credential_bytes`.
    """
    if total_bytes > limits.max_credential_bytes:
        raise LimitExceeded(
            f"a user's credentials (keys and values) take at most {limits.max_credential_bytes}"
            f" bytes (VAULT_MAX_CREDENTIAL_BYTES); this change would make {total_bytes}"
        )
