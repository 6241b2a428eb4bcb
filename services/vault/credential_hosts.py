"""Credential host binding (SPEC 2.9, 4.7): the upstream hosts a credential may be sent to.

A credential's bound hosts (canonical patterns, `services.common.host_patterns`) are stored
beside its value and sealed with it (`crypto` format 2 binds them in the value's associated
data). Setting them opens the value (which also checks the binding stored until now) and seals
it again for the new hosts, stored together in one transaction; an empty list unbinds it. A
binding changed in the database without the keyring makes the value fail to open: it is then
refused with a logged integrity error and never used or shown.

Every change is audited as `credentials.hosts` with the key name, never the value or hosts.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.common.credential_rules import KEY_PATTERN, describe, validate_key
from services.common.errors import Unavailable
from services.common.host_patterns import canonical_patterns, patterns_json
from services.vault.audit import audit_failures, audit_record
from services.vault.credentials import WRITE_ATTEMPTS, open_credential, stored_hosts
from services.vault.envelope import Envelope
from services.vault.errors import CredentialNotFound
from services.vault.store import UNBOUND_HOSTS, StoredCredential, hosts_binding
from services.vault.store.credential_hosts import CredentialHostStore
from services.vault.validation import validate_user_id

ACTION = "credentials.hosts"


class CredentialHosts:
    """The domain operations behind `GetCredentialHosts` and `SetCredentialHosts`."""

    def __init__(self, store: CredentialHostStore, envelope: Envelope) -> None:
        self._store = store
        self._envelope = envelope

    def __repr__(self) -> str:
        return f"CredentialHosts(envelope={self._envelope!r})"

    async def get_all(self, user_id: str) -> dict[str, tuple[str, ...]]:
        """The bound hosts of each bound credential of the user (unbound keys are absent).

        Each binding is checked by opening its value, so what is shown is what is enforced.
        """
        validate_user_id(user_id)
        bound = await self._store.get_bound_credentials(user_id)
        if not bound:
            return {}
        opener = await self._envelope.opener_for(user_id)
        for key, stored in bound.items():
            open_credential(opener, key, stored)
        return {key: stored_hosts(stored) for key, stored in bound.items() if stored.binding}

    async def get(self, user_id: str, key: str) -> tuple[str, ...]:
        """One credential's bound hosts (empty: any host); CredentialNotFound if absent."""
        validate_user_id(user_id)
        validate_key(key)
        stored = await self._store.get_credential(user_id, key)
        if stored is None:
            raise CredentialNotFound(f"credential {describe(key)} not found")
        if stored.binding or stored.sealed_bound:
            open_credential(await self._envelope.opener_for(user_id), key, stored)
        return stored_hosts(stored)

    async def set(
        self, caller: str, user_id: str, key: str, hosts: Sequence[str]
    ) -> tuple[str, ...]:
        """Bind the credential to `hosts` (empty: unbind); the canonical hosts as stored.

        Raises:
            InvalidArgument: a bad key or pattern (the message names it).
            CredentialNotFound: the user has no credential `key`.
        """
        validate_user_id(user_id)
        names = [key] if KEY_PATTERN.fullmatch(key) else []
        record = audit_record(caller, user_id, ACTION, names)
        async with audit_failures(self._store, record):
            validate_key(key)
            canonical = canonical_patterns(hosts)
            text = patterns_json(canonical) if canonical else UNBOUND_HOSTS
            for _ in range(WRITE_ATTEMPTS):
                stored = await self._store.get_credential(user_id, key)
                if stored is None:
                    raise CredentialNotFound(f"credential {describe(key)} not found")
                value = open_credential(await self._envelope.opener_for(user_id), key, stored)
                blob = await self._envelope.seal(user_id, key, value, hosts_binding(text))
                new = StoredCredential(blob, text)
                if await self._store.set_credential_hosts(
                    user_id, key, stored.blob, new, audit=record
                ):
                    return canonical
            raise Unavailable(f"credential {describe(key)} kept changing meanwhile; try again")
