"""Users' AI providers (SPEC 2.3): validated, headers sealed at rest, masked in responses.

A provider's header values may hold placeholders or literal secrets, so they are sealed with
the user's data key. Everything else (kind, base URL, models, missing-credential mode) is stored
in clear so that `Resolve` can select a provider by model without decrypting every provider, and
is bound to the sealed headers by their AAD (SPEC 4.7): the purpose is `provider-config:` and a
canonical JSON array of the name, kind, base URL, models and mode (with the user id and data key
id that every AAD holds). A row whose configuration was changed in the database without the
keyring fails to open: it is reported as an integrity error and never used (Get and Resolve
answer INTERNAL, reason `integrity_error`; List leaves it out). Rows sealed before (purpose
`provider:<name>:headers`) are re-sealed in place at the first start (`resealing`).

Responses of ProviderService show headers masked (the one rule in
`services.common.header_masking`); only `Resolve` hands them out unmasked, to the router.

Saving a provider also refuses headers that, substituted with the user's current credential
values, would pass the size bounds the router enforces on every call (SPEC 3.5, the one rule in
`services.common.header_bounds`, with its default limits): INVALID_ARGUMENT, reason
`header_too_large`, naming the header. Credentials changed later are caught by the router.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol, TypeVar

from services.common import header_bounds
from services.common.credential_rules import describe
from services.common.errors import InvalidArgument
from services.common.header_bounds import HeaderBounds
from services.common.header_masking import literal_secret_warnings, mask_headers
from services.common.model_selection import select_provider
from services.common.placeholders import referenced_keys
from services.common.provider_rules import (
    DEFAULT_ON_MISSING_CREDENTIAL,
    PROVIDER_NAME,
    validate_base_url,
    validate_headers,
    validate_kind,
    validate_models,
    validate_on_missing,
    validate_provider_name,
)
from services.vault.audit import audit_failures, audit_record
from services.vault.bulk_reads import BulkReads, Pace
from services.vault.credentials import open_credential
from services.vault.envelope import Envelope, Opener
from services.vault.errors import (
    DecryptionFailed,
    ModelNotFound,
    ProviderExists,
    ProviderIntegrityError,
    ProviderNotFound,
)
from services.vault.row_seals import PROVIDER_ROW, report_integrity_error
from services.vault.store import AuditSink, CredentialStore, ProviderRecord, ProviderStore
from services.vault.validation import validate_user_id

T = TypeVar("T")


class AuditedProviderStore(ProviderStore, CredentialStore, AuditSink, Protocol):
    """Providers, and the credentials their headers reference (read to check the bounds)."""


@dataclass(frozen=True)
class ProviderConfig:
    """One provider as the user configured it."""

    name: str
    kind: str
    base_url: str
    headers: dict[str, list[str]] = field(repr=False)
    models: tuple[str, ...] = ()
    on_missing_credential: str = DEFAULT_ON_MISSING_CREDENTIAL

    def masked(self) -> ProviderConfig:
        """The same provider with sensitive header values masked (SPEC 2.3)."""
        return replace(self, headers=mask_headers(self.headers))

    @property
    def referenced_keys(self) -> list[str]:
        """Credential keys that the header values reference, each once, in order."""
        return referenced_keys(v for values in self.headers.values() for v in values)

    @property
    def warnings(self) -> list[str]:
        return literal_secret_warnings(self.headers)


@dataclass(frozen=True)
class ProviderView:
    """A provider as a response shows it: masked, with advice about its configuration."""

    provider: ProviderConfig
    warnings: list[str]


def validate_provider(config: ProviderConfig) -> ProviderConfig:
    """Check every field (issue 3, item 1); the first problem is raised, naming the field."""
    validate_provider_name(config.name)
    validate_kind(config.kind)
    validate_base_url(config.base_url)
    headers = validate_headers(config.headers)
    models = validate_models(config.models)
    validate_on_missing(config.on_missing_credential)
    return replace(config, headers=headers, models=models)


def legacy_headers_purpose(name: str) -> str:
    """The AAD purpose of headers sealed before migration 6 (configuration left out)."""
    return f"provider:{name}:headers"


def config_purpose(
    name: str, kind: str, base_url: str, models: Sequence[str], on_missing_credential: str
) -> str:
    """The AAD purpose of a provider's headers: binds its whole configuration to them."""
    fields = [2, name, kind, base_url, list(models), on_missing_credential]
    return "provider-config:" + json.dumps(fields, separators=(",", ":"))


def record_purpose(record: ProviderRecord) -> str:
    return config_purpose(
        record.name, record.kind, record.base_url, record.models, record.on_missing_credential
    )


def _view(config: ProviderConfig) -> ProviderView:
    return ProviderView(config.masked(), config.warnings)


class ProviderBook:
    """The domain operations behind ProviderService (Resolve selects with the functions below)."""

    def __init__(
        self,
        store: AuditedProviderStore,
        envelope: Envelope,
        header_bounds: HeaderBounds | None = None,
        bulk: BulkReads | None = None,
    ) -> None:
        self._store = store
        self._envelope = envelope
        self._header_bounds = header_bounds or HeaderBounds()
        self._bulk = bulk or BulkReads()

    def __repr__(self) -> str:
        return "ProviderBook()"

    @property
    def envelope(self) -> Envelope:
        return self._envelope

    async def _record(self, user_id: str, config: ProviderConfig) -> ProviderRecord:
        purpose = config_purpose(
            config.name,
            config.kind,
            config.base_url,
            config.models,
            config.on_missing_credential,
        )
        blob = await self._envelope.seal(user_id, purpose, json.dumps(list(config.headers.items())))
        return ProviderRecord(
            user_id=user_id,
            name=config.name,
            kind=config.kind,
            base_url=config.base_url,
            models=config.models,
            on_missing_credential=config.on_missing_credential,
            headers_blob=blob,
        )

    async def _check_header_bounds(self, user_id: str, config: ProviderConfig) -> None:
        """Refuse headers that the user's current values would take over the bounds."""
        keys = config.referenced_keys
        blobs = await self._store.get_credentials_named(user_id, keys) if keys else {}
        values: dict[str, str] = {}
        if blobs:
            # Opened as every credential read opens one: a tampered value is reported, not used.
            opener = await self._envelope.opener_for(user_id)
            values = {key: open_credential(opener, key, stored) for key, stored in blobs.items()}
        problem = header_bounds.headers_problem(config.headers.items(), values, self._header_bounds)
        if problem:
            raise InvalidArgument(problem, reason=header_bounds.REASON)

    async def _config(self, record: ProviderRecord) -> ProviderConfig:
        return open_provider(record, await self._envelope.opener_for(record.user_id))

    async def create(self, caller: str, user_id: str, config: ProviderConfig) -> ProviderView:
        validate_user_id(user_id)
        record = audit_record(caller, user_id, "providers.create", _names(config.name))
        async with audit_failures(self._store, record):
            config = validate_provider(config)
            await self._check_header_bounds(user_id, config)
            stored = await self._record(user_id, config)
            if not await self._store.create_provider(stored, audit=record):
                raise ProviderExists(f"provider {describe(config.name)} already exists")
        return _view(config)

    async def update(self, caller: str, user_id: str, config: ProviderConfig) -> ProviderView:
        validate_user_id(user_id)
        record = audit_record(caller, user_id, "providers.update", _names(config.name))
        async with audit_failures(self._store, record):
            config = validate_provider(config)
            await self._check_header_bounds(user_id, config)
            stored = await self._record(user_id, config)
            if not await self._store.update_provider(stored, audit=record):
                raise ProviderNotFound(f"provider {describe(config.name)} not found")
        return _view(config)

    async def delete(self, caller: str, user_id: str, name: str) -> None:
        validate_user_id(user_id)
        record = audit_record(caller, user_id, "providers.delete", _names(name))
        async with audit_failures(self._store, record):
            validate_provider_name(name)
            if not await self._store.delete_provider(user_id, name, audit=record):
                raise ProviderNotFound(f"provider {describe(name)} not found")

    async def get(self, user_id: str, name: str) -> ProviderView:
        """One provider, masked."""
        return _view(await self.unmasked(user_id, name))

    async def get_all(self, user_id: str, present: Callable[[Iterable[ProviderConfig]], T]) -> T:
        """All of the user's providers, masked, sorted by name, as `present` makes them (e.g. a
        serialized response) from the providers it is handed one at a time. Opening, masking
        and presenting grow with what the user stores, so for a large list they run on a
        worker thread, paced (`BulkReads`)."""
        validate_user_id(user_id)
        records = await self._store.list_providers(user_id)
        opener = await self._envelope.opener_for(user_id) if records else None

        def masked(pace: Pace) -> T:
            # A provider that fails its integrity check is left out (and reported), so that the
            # others stay usable; it can still be deleted or overwritten by name.
            opened = _opened_intact(records, opener) if opener else iter(())
            return present(config.masked() for config in pace(opened))

        size = sum(len(record.headers_blob) for record in records)
        return await self._bulk.run(user_id, size, masked)

    async def unmasked(self, user_id: str, name: str) -> ProviderConfig:
        """One provider with its headers as configured."""
        validate_user_id(user_id)
        validate_provider_name(name)
        record = await self._store.get_provider(user_id, name)
        if record is None:
            raise ProviderNotFound(f"provider {describe(name)} not found")
        return await self._config(record)


def provider_named(records: Iterable[ProviderRecord], name: str) -> ProviderRecord:
    """The provider `name` among the user's records."""
    for record in records:
        if record.name == name:
            return record
    raise ProviderNotFound(f"provider {describe(name)} not found")


def provider_for_model(records: Sequence[ProviderRecord], model: str) -> tuple[ProviderRecord, str]:
    """The provider for `model` and the model name to send upstream, by the one rule of SPEC 2.6
    (`services.common.model_selection.select_provider`)."""
    choice = select_provider(model, records)
    if choice is not None:
        return choice.provider, choice.upstream_model
    raise ModelNotFound(f"model {describe(model)} is not served by any of the user's providers")


def open_provider(record: ProviderRecord, opener: Opener) -> ProviderConfig:
    """A stored provider with its headers opened (no I/O: the data key is at hand).

    Raises:
        ProviderIntegrityError: its headers do not open with its configuration as stored (the
            row was changed without the keyring, or is damaged); reported, never used.
    """
    try:
        return _config_of(record, opener.open(record_purpose(record), record.headers_blob))
    except DecryptionFailed:
        report_integrity_error(PROVIDER_ROW, record.name, record.user_id)
        raise ProviderIntegrityError(
            f"provider {describe(record.name)} failed its integrity check and cannot be used; "
            "save it again or delete it"
        ) from None


def _opened_intact(records: Iterable[ProviderRecord], opener: Opener) -> Iterator[ProviderConfig]:
    """The records opened one by one as they are asked for, those that fail left out."""
    for record in records:
        try:
            yield open_provider(record, opener)
        except ProviderIntegrityError:
            continue


def _config_of(record: ProviderRecord, headers_text: str) -> ProviderConfig:
    try:
        pairs = json.loads(headers_text)
        headers = {str(name): [str(v) for v in values] for name, values in pairs}
    except (ValueError, TypeError):
        raise DecryptionFailed("stored provider headers are malformed") from None
    return ProviderConfig(
        name=record.name,
        kind=record.kind,
        base_url=record.base_url,
        headers=headers,
        models=record.models,
        on_missing_credential=record.on_missing_credential,
    )


def _names(name: str) -> list[str]:
    return [name] if PROVIDER_NAME.fullmatch(name) else []
