"""`Resolve`: everything the router needs for one upstream call, in one lookup (SPEC 3.3).

Given explicit keys it returns their values; given a provider name or a model it selects the
provider (SPEC 2.6) and returns its unmasked configuration with the values of exactly the keys
its headers reference. Every call is audited with key names only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from services.vault.audit import audit_failures, audit_record
from services.vault.credentials import CredentialMaps
from services.vault.store import AuditSink
from services.vault.validation import KEY_PATTERN, validate_user_id


@dataclass(frozen=True)
class Resolution:
    """What one upstream call needs."""

    values: dict[str, str] = field(repr=False)
    missing_keys: list[str]


class Resolver:
    def __init__(self, credentials: CredentialMaps, audit: AuditSink) -> None:
        self._credentials = credentials
        self._audit = audit

    def __repr__(self) -> str:
        return "Resolver()"

    async def resolve_keys(self, caller: str, user_id: str, keys: Sequence[str]) -> Resolution:
        """Values of the named keys that exist and the sorted names of those that do not."""
        validate_user_id(user_id)
        names = [k for k in dict.fromkeys(keys) if KEY_PATTERN.fullmatch(k)]
        record = audit_record(caller, user_id, "credentials.resolve", names)
        async with audit_failures(self._audit, record):
            values, missing = await self._credentials.values(user_id, keys)
        # Strict: a Resolve that cannot be audited does not hand out values.
        await self._audit.append_audit(record)
        return Resolution(values, missing)
