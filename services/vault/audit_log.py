"""Reading the audit log (SPEC 4.5): a user's events, newest first, a page at a time.

Writing is `services.vault.audit` (records appended by the store with each change); this module
only reads. The log is append-only: nothing here or in the store updates or deletes an event.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from services.common.errors import InvalidArgument
from services.vault.validation import validate_user_id

DEFAULT_PAGE = 100
MAX_PAGE = 1000


@dataclass(frozen=True)
class AuditEvent:
    """One recorded action: names only, never values."""

    id: int
    time: datetime
    caller: str
    user_id: str
    action: str
    keys: tuple[str, ...]
    outcome: str


class AuditReader(Protocol):
    async def list_audit_events(
        self, user_id: str, *, limit: int, before_id: int | None
    ) -> list[AuditEvent]:
        """Up to `limit` of the user's events with id < `before_id` (None: all), newest first."""


class AuditLog:
    """The domain operation behind AuditService."""

    def __init__(self, reader: AuditReader) -> None:
        self._reader = reader

    async def list_events(
        self, user_id: str, *, limit: int = 0, before_id: int = 0
    ) -> list[AuditEvent]:
        """A page of the user's events, newest first.

        Args:
            limit: at most this many (0: 100; more than 1000 is capped at 1000).
            before_id: only events with a lower id (0: from the newest).

        Raises:
            InvalidArgument: a bad user id, a negative limit or before_id.
        """
        validate_user_id(user_id)
        if limit < 0:
            raise InvalidArgument("limit must not be negative")
        if before_id < 0:
            raise InvalidArgument("before_id must not be negative")
        page = min(limit or DEFAULT_PAGE, MAX_PAGE)
        return await self._reader.list_audit_events(
            user_id, limit=page, before_id=before_id or None
        )
