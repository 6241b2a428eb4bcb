"""Token usage (issue 18): each user's input and output tokens per provider and model per day.

The router reports what it read from the upstreams' answers (`RecordUsage`, right `resolve`);
the vault adds it to the totals of the current UTC day, by its own clock, and the gateway reads
a user's range of days (`GetUsage`, right `manage`). The rules shared with the router and the
gateway (days, ranges, bounds, the overflow row) are `services.common.usage_rules`.

What one user can make the vault store is bounded: entries are validated (a provider name as
providers are named, a model as models are, counts within `MAX_TOKENS`/`MAX_CALLS`), and a user
keeps at most `MAX_ROWS_PER_DAY` (provider, model) rows a day; the store adds counts of a new
pair beyond that to the `OVERFLOW` row. Usage is not audited: it changes no credential and no
configuration, and an audit row per answer would outgrow the usage itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Protocol

from services.common.errors import InvalidArgument
from services.common.provider_rules import validate_model, validate_provider_name
from services.common.usage_rules import MAX_CALLS, MAX_ROWS_PER_DAY, MAX_TOKENS, day_range
from services.vault.validation import validate_user_id

MAX_ENTRIES = 1000
"""The most entries one `RecordUsage` carries."""


@dataclass(frozen=True)
class UsageCounts:
    """Counts of one user's calls to one provider and model."""

    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    calls: int


@dataclass(frozen=True)
class UsageEntry:
    """`UsageCounts` for a user, as the router reports them."""

    user_id: str
    counts: UsageCounts


@dataclass(frozen=True)
class UsageRow:
    """One day's totals of one provider and model."""

    day: str
    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    calls: int


class UsageStore(Protocol):
    async def add_usage(
        self, user_id: str, day: str, counts: Sequence[UsageCounts], *, max_rows: int
    ) -> None:
        """Add `counts` to the user's rows of `day` in one transaction; a pair the user has no
        row for that day, once the day has `max_rows` other rows, goes to the overflow row."""

    async def get_usage(self, user_id: str, first_day: str, last_day: str) -> list[UsageRow]:
        """The user's rows from `first_day` to `last_day` (included), by day, provider, model."""


def _utc_today() -> date:
    return datetime.now(UTC).date()


def _checked(entry: UsageEntry) -> UsageEntry:
    counts = entry.counts
    validate_user_id(entry.user_id)
    validate_provider_name(counts.provider)
    validate_model(counts.model)
    for name, value in (
        ("input_tokens", counts.input_tokens),
        ("output_tokens", counts.output_tokens),
    ):
        if not 0 <= value <= MAX_TOKENS:
            raise InvalidArgument(f"{name} must be from 0 to {MAX_TOKENS}")
    if not 1 <= counts.calls <= MAX_CALLS:
        raise InvalidArgument(f"calls must be from 1 to {MAX_CALLS}")
    return entry


def _summed(entries: Sequence[UsageEntry]) -> dict[str, list[UsageCounts]]:
    """The entries added up per user and (provider, model), in the order first seen."""
    sums: dict[tuple[str, str, str], list[int]] = {}
    for entry in entries:
        c = entry.counts
        total = sums.setdefault((entry.user_id, c.provider, c.model), [0, 0, 0])
        total[0] += c.input_tokens
        total[1] += c.output_tokens
        total[2] += c.calls
    by_user: dict[str, list[UsageCounts]] = {}
    for (user_id, provider, model), (inputs, outputs, calls) in sums.items():
        by_user.setdefault(user_id, []).append(UsageCounts(provider, model, inputs, outputs, calls))
    return by_user


class UsageBook:
    """The domain operations behind `UsageService`."""

    def __init__(self, store: UsageStore, today: Callable[[], date] = _utc_today) -> None:
        self._store = store
        self._today = today

    def __repr__(self) -> str:
        return "UsageBook()"

    async def record(self, entries: Sequence[UsageEntry]) -> None:
        """Add the entries to their users' totals of today (UTC).

        Raises:
            InvalidArgument: more than `MAX_ENTRIES` entries, or a bad one (nothing is added).
        """
        if len(entries) > MAX_ENTRIES:
            raise InvalidArgument(f"a usage report carries at most {MAX_ENTRIES} entries")
        checked = [_checked(entry) for entry in entries]
        day = self._today().isoformat()
        for user_id, counts in _summed(checked).items():
            await self._store.add_usage(user_id, day, counts, max_rows=MAX_ROWS_PER_DAY)

    async def get(self, user_id: str, from_day: str, to_day: str) -> list[UsageRow]:
        """The user's rows of the range (an empty end: see `usage_rules.day_range`).

        Raises:
            InvalidArgument: a bad user id or range.
        """
        validate_user_id(user_id)
        span = day_range(from_day, to_day, today=self._today())
        return await self._store.get_usage(user_id, span.first.isoformat(), span.last.isoformat())
