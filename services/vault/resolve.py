"""`Resolve`: everything the router needs for one upstream call, in one lookup (SPEC 3.3).

Given explicit keys it returns their values; given a provider name or a model it selects the
provider (SPEC 2.6) and returns its unmasked configuration with the values of exactly the keys
its headers reference (least exposure: never the whole map). Every call is audited with key
names only; a Resolve that cannot be audited hands out nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from services.vault.audit import audit_failures, audit_record
from services.vault.credentials import CredentialMaps
from services.vault.providers import ProviderBook, ProviderConfig
from services.vault.store import AuditRecord, AuditSink
from services.vault.validation import KEY_PATTERN, validate_user_id

ACTION = "credentials.resolve"


@dataclass(frozen=True)
class Resolution:
    """What one upstream call needs."""

    values: dict[str, str] = field(repr=False)
    missing_keys: list[str]
    provider: ProviderConfig | None = None
    upstream_model: str = ""


class Resolver:
    def __init__(
        self, credentials: CredentialMaps, providers: ProviderBook, audit: AuditSink
    ) -> None:
        self._credentials = credentials
        self._providers = providers
        self._audit = audit

    def __repr__(self) -> str:
        return "Resolver()"

    async def resolve_keys(self, caller: str, user_id: str, keys: Sequence[str]) -> Resolution:
        """Values of the named keys that exist and the sorted names of those that do not."""
        validate_user_id(user_id)
        names = [k for k in dict.fromkeys(keys) if KEY_PATTERN.fullmatch(k)]
        record = audit_record(caller, user_id, ACTION, names)
        async with audit_failures(self._audit, record):
            values, missing = await self._credentials.values(user_id, keys)
            await self._audit.append_audit(record)
        return Resolution(values, missing)

    async def resolve_provider(self, caller: str, user_id: str, name: str) -> Resolution:
        """The provider `name` and the values its headers reference."""
        validate_user_id(user_id)
        record = audit_record(caller, user_id, ACTION)
        async with audit_failures(self._audit, record):
            provider = await self._providers.unmasked(user_id, name)
            return await self._with_values(record, user_id, provider, "")

    async def resolve_model(self, caller: str, user_id: str, model: str) -> Resolution:
        """The provider serving `model` (SPEC 2.6), the upstream model name, and the values."""
        validate_user_id(user_id)
        record = audit_record(caller, user_id, ACTION)
        async with audit_failures(self._audit, record):
            provider, upstream_model = await self._providers.select_for_model(user_id, model)
            return await self._with_values(record, user_id, provider, upstream_model)

    async def _with_values(
        self, record: AuditRecord, user_id: str, provider: ProviderConfig, upstream_model: str
    ) -> Resolution:
        keys = provider.referenced_keys
        values, missing = await self._credentials.values(user_id, keys)
        await self._audit.append_audit(replace(record, keys=tuple(sorted(keys))))
        return Resolution(values, missing, provider, upstream_model)
