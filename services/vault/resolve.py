"""`Resolve`: everything the router needs for one upstream call, in one lookup (SPEC 3.3).

Given explicit keys it returns their values; given a provider name or a model it selects the
provider (SPEC 2.6) and returns its unmasked configuration with the values of exactly the keys
its headers reference (least exposure: never the whole map). Every call is audited with key
names only; a Resolve that cannot be audited hands out nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from services.common.credential_rules import KEY_PATTERN, describe
from services.common.errors import InvalidArgument
from services.common.provider_rules import is_valid_model, validate_provider_name
from services.vault.audit import audit_failures, audit_record
from services.vault.credentials import CredentialMaps
from services.vault.errors import ModelNotFound
from services.vault.providers import (
    ProviderBook,
    ProviderConfig,
    open_provider,
    provider_for_model,
    provider_named,
)
from services.vault.store import AuditRecord, AuditSink, ProviderRecord, ResolveRows, ResolveStore
from services.vault.validation import validate_user_id

ACTION = "credentials.resolve"


@dataclass(frozen=True)
class Resolution:
    """What one upstream call needs."""

    values: dict[str, str] = field(repr=False)
    missing_keys: list[str]
    provider: ProviderConfig | None = None
    upstream_model: str = ""
    # The bound hosts of those returned values that are bound (SPEC 2.9; the router enforces).
    value_hosts: dict[str, tuple[str, ...]] = field(default_factory=dict)


class ResolveSource(ResolveStore, AuditSink, Protocol):
    pass


class Resolver:
    """Resolve by provider or model reads the candidate providers (the one named, or the one or
    two a model can select: `ResolveStore.get_model_resolve_rows`) and the wrapped data key at
    once, never the user's other providers; decrypts only the chosen provider's headers, then
    reads and decrypts the values they reference, and appends its audit row."""

    def __init__(
        self, credentials: CredentialMaps, providers: ProviderBook, store: ResolveSource
    ) -> None:
        self._credentials = credentials
        self._envelope = providers.envelope
        self._store = store

    def __repr__(self) -> str:
        return "Resolver()"

    async def resolve_keys(self, caller: str, user_id: str, keys: Sequence[str]) -> Resolution:
        """Values of the named keys that exist and the sorted names of those that do not."""
        validate_user_id(user_id)
        names = [k for k in dict.fromkeys(keys) if KEY_PATTERN.fullmatch(k)]
        record = audit_record(caller, user_id, ACTION, names)
        async with audit_failures(self._store, record):
            values, hosts, missing = await self._credentials.values_with_hosts(user_id, keys)
            await self._store.append_audit(record)
        return Resolution(values, missing, value_hosts=hosts)

    async def resolve_provider(self, caller: str, user_id: str, name: str) -> Resolution:
        """The provider `name` and the values its headers reference."""
        validate_user_id(user_id)
        record = audit_record(caller, user_id, ACTION)
        async with audit_failures(self._store, record):
            validate_provider_name(name)
            rows = await self._store.get_resolve_rows(user_id, name)
            chosen = provider_named(rows.providers, name)
            return await self._with_values(record, rows, chosen, "")

    async def resolve_model(self, caller: str, user_id: str, model: str) -> Resolution:
        """The provider serving `model` (SPEC 2.6), the upstream model name, and the values."""
        validate_user_id(user_id)
        record = audit_record(caller, user_id, ACTION)
        async with audit_failures(self._store, record):
            if not model:
                raise InvalidArgument("name a model")
            if not is_valid_model(model):
                # No provider can list a string that is no model name (SPEC 2.6: 404), the
                # answer `GET /v1/models/{id}` gives for it too (common.model_selection).
                raise ModelNotFound(
                    f"model {describe(model)} is not served by any of the user's providers"
                )
            prefix, slash, rest = model.partition("/")
            rows = await self._store.get_model_resolve_rows(
                user_id, model, prefix if slash and rest else None
            )
            # The candidates hold whatever `select_provider` would pick among all providers.
            chosen, upstream_model = provider_for_model(rows.providers, model)
            return await self._with_values(record, rows, chosen, upstream_model)

    async def _with_values(
        self, record: AuditRecord, rows: ResolveRows, chosen: ProviderRecord, upstream_model: str
    ) -> Resolution:
        # The opener also caches the data key read along, so `values` needs no read for it.
        provider = open_provider(chosen, self._envelope.opener(record.user_id, rows.data_key))
        keys = provider.referenced_keys
        values, hosts, missing = await self._credentials.values_with_hosts(record.user_id, keys)
        await self._store.append_audit(replace(record, keys=tuple(sorted(keys))))
        return Resolution(values, missing, provider, upstream_model, hosts)
