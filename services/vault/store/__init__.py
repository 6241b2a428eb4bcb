"""The vault's storage interface: what the domain layer needs from a database, and no more.

Every backend (SQLite today, PostgreSQL later) implements `VaultStore` and passes the same
tests. The store holds only ciphertext for secrets: credential values and provider headers
arrive sealed, data keys arrive wrapped. It never decrypts.

Writes that change state take an `AuditRecord` and append it in the same transaction, only when
the change happens (so no acknowledged change lacks its audit row); a request that fails is
audited separately through `append_audit`.

Writes that add data enforce the user's limits (`services.vault.user_limits`, given to the
backend when it opens): the backend measures what the user has inside the write transaction and
refuses with `LimitExceeded` before writing anything.

Adding a concern (API tokens, sessions, audit reading): define its own Protocol here or in a
sibling module, add its tables as a new migration at the end of `migrations.MIGRATIONS`, and
implement it on the backend with the database helpers in `sqlite_db` — no existing method
changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class WrappedDataKey:
    """A user's data key (DEK), sealed under the master key `kek_id`."""

    user_id: str
    dek_id: str
    kek_id: str
    blob: bytes = field(repr=False)


@dataclass(frozen=True)
class ProviderRecord:
    """A stored provider: plain configuration plus its headers sealed under the user's DEK."""

    user_id: str
    name: str
    kind: str
    base_url: str
    models: tuple[str, ...]
    on_missing_credential: str
    headers_blob: bytes = field(repr=False)


UNBOUND_HOSTS = "[]"
"""The stored `hosts` of a credential bound to no host (any host may receive it)."""


def hosts_binding(hosts: str) -> str:
    """What a value's seal is bound to besides its key, for stored `hosts`: empty when unbound
    (the value keeps sealed format 1), else the hosts text exactly as stored."""
    return "" if hosts == UNBOUND_HOSTS else "hosts:" + hosts


@dataclass(frozen=True)
class StoredCredential:
    """A stored credential: its sealed value and its bound hosts as stored (canonical JSON,
    `UNBOUND_HOSTS` when unbound), which the value's seal covers (SPEC 2.9, 4.7)."""

    blob: bytes = field(repr=False)
    hosts: str = UNBOUND_HOSTS

    @property
    def sealed_bound(self) -> bool:
        """Whether the value was sealed bound to hosts (sealed-blob format 2, `crypto`): then
        its stored hosts must be checked by opening it, even if they now read `[]`."""
        return self.blob[:1] == b"\x02"

    @property
    def binding(self) -> str:
        """What the value's seal is bound to besides its key: empty when unbound (format 1)."""
        return hosts_binding(self.hosts)


@dataclass(frozen=True)
class AuditRecord:
    """One audited action: names only, never values (SPEC 4.5)."""

    time: datetime
    caller: str
    user_id: str
    action: str
    keys: tuple[str, ...]
    outcome: str


class DataKeyStore(Protocol):
    async def get_data_key(self, user_id: str) -> WrappedDataKey | None:
        """The user's wrapped data key, if any."""

    async def add_data_key(self, key: WrappedDataKey) -> WrappedDataKey:
        """Store a first data key for its user; if one exists already, keep and return that."""

    async def master_key_ids_in_use(self) -> set[str]:
        """Ids of the master keys that wrap at least one data key or seal a token or session."""

    async def get_master_key_checks(self) -> dict[str, bytes]:
        """Master key id -> a known blob sealed with it, to detect a wrong key at start."""

    async def add_master_key_check(self, kek_id: str, blob: bytes) -> None:
        """Record a check blob for a master key that has none (an existing one is kept)."""


class CredentialStore(Protocol):
    async def get_credentials(self, user_id: str) -> dict[str, StoredCredential]:
        """The user's whole map: key -> sealed value and bound hosts."""

    async def get_credentials_named(
        self, user_id: str, keys: Sequence[str]
    ) -> dict[str, StoredCredential]:
        """Sealed values (and bound hosts) of those of `keys` the user has."""

    async def put_credential(
        self,
        user_id: str,
        key: str,
        blob: bytes,
        *,
        audit: AuditRecord,
        hosts: str = UNBOUND_HOSTS,
    ) -> bool:
        """Create or update one pair whose value was sealed for `hosts`, the key's bound hosts
        as the caller read them. False (nothing written) if the key exists with other hosts
        now: its binding changed meanwhile, so the caller seals again.

        Raises:
            LimitExceeded: the map would exceed the user's limit (nothing written).
        """

    async def replace_credentials(
        self,
        user_id: str,
        blobs: Mapping[str, bytes],
        *,
        audit: AuditRecord,
        hosts: Mapping[str, str] | None = None,
    ) -> bool:
        """Make the map exactly `blobs`, in one transaction; the keys in `hosts` keep those
        bound hosts (their values were sealed for them), the others are unbound. False
        (nothing written) if a kept key's hosts are not `hosts` any more (changed meanwhile).
        The audit record's keys are the changes as `audit.map_changes` names them (a blob
        equal to the stored one: unchanged).

        Raises:
            LimitExceeded: the map would exceed the user's limit (nothing written).
        """

    async def delete_credential(self, user_id: str, key: str, *, audit: AuditRecord) -> bool:
        """Delete one pair; False (and no audit row) if absent."""

    async def delete_credentials(self, user_id: str, *, audit: AuditRecord) -> int:
        """Delete the whole map; the number of pairs deleted. The audit record's keys are the
        names of the deleted pairs."""


class ProviderStore(Protocol):
    async def get_provider(self, user_id: str, name: str) -> ProviderRecord | None: ...

    async def list_providers(self, user_id: str) -> list[ProviderRecord]:
        """The user's providers sorted by name."""

    async def create_provider(self, record: ProviderRecord, *, audit: AuditRecord) -> bool:
        """Insert; False (and no audit row) if the user has a provider of that name.

        Raises:
            LimitExceeded: one provider too many, or too many bytes (nothing written).
        """

    async def update_provider(self, record: ProviderRecord, *, audit: AuditRecord) -> bool:
        """Replace; False (and no audit row) if absent.

        Raises:
            LimitExceeded: the user's providers would take too many bytes (nothing written).
        """

    async def delete_provider(self, user_id: str, name: str, *, audit: AuditRecord) -> bool:
        """Delete; False (and no audit row) if absent."""


@dataclass(frozen=True)
class ResolveRows:
    """What a Resolve by provider or model reads first, in one read: the candidate providers
    (sorted by name; at most two) and the user's wrapped data key (for when it is not cached)."""

    providers: tuple[ProviderRecord, ...]
    data_key: WrappedDataKey | None


class ResolveStore(Protocol):
    async def get_resolve_rows(self, user_id: str, name: str) -> ResolveRows:
        """The user's provider `name` (if any) and wrapped data key, in one read."""

    async def get_model_resolve_rows(
        self, user_id: str, model: str, prefix: str | None
    ) -> ResolveRows:
        """The candidates for `model`, and the wrapped data key, in one read: the provider named
        `prefix` (if given and present) and the first provider by name whose models list
        `model` exactly (if any). `select_provider` over these picks what it would pick over
        all of the user's providers; the other providers are not read."""


class AuditSink(Protocol):
    async def append_audit(self, record: AuditRecord) -> None:
        """Append one record in its own transaction (reads and failed requests), committed
        durably before returning. Concurrent appends may share one commit; if it fails, each
        of them raises."""


class VaultStore(DataKeyStore, CredentialStore, ProviderStore, ResolveStore, AuditSink, Protocol):
    """Everything the credential and provider services need."""

    async def close(self) -> None: ...
