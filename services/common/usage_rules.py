"""Rules of token usage shared by the vault (which stores it), the router (which reports it)
and the gateway (which shows it). Pure: no I/O, no grpc.

Days are UTC calendar days written `YYYY-MM-DD`. A read covers at most `MAX_USAGE_DAYS` days.
Counts are bounded (`MAX_TOKENS`, `MAX_CALLS`) so that a total of many years still fits the
64-bit columns. Model names are what `provider_rules.MODEL` allows; anything else is reported as
`UNKNOWN_MODEL`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta

from services.common.errors import InvalidArgument
from services.common.provider_rules import MODEL

MAX_USAGE_DAYS = 366
"""The most days one usage read covers (a year, leap day included)."""
DEFAULT_USAGE_DAYS = 30
"""The days a read covers when it names no range: the last 30, today included."""
MAX_TOKENS = 2**40
"""The most tokens one usage entry may carry, input or output."""
MAX_CALLS = 2**31
"""The most calls one usage entry may stand for."""
MAX_ROWS_PER_DAY = 200
"""The most (provider, model) rows a user keeps per day; beyond, counts go to `OVERFLOW`."""
OVERFLOW = "other"
"""Provider and model of the row that takes a day's counts beyond `MAX_ROWS_PER_DAY`."""
UNKNOWN_MODEL = "unknown"
"""The model of a call that named none (or none the rules allow)."""

_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def parse_day(text: str, name: str = "day") -> date:
    """A `YYYY-MM-DD` day.

    Raises:
        InvalidArgument: not a real calendar day in that form (the message names `name`).
    """
    if _DAY.fullmatch(text):
        try:
            return date.fromisoformat(text)
        except ValueError:
            pass
    raise InvalidArgument(f"{name} must be a day written YYYY-MM-DD")


@dataclass(frozen=True)
class DayRange:
    """Days from `first` to `last`, both included."""

    first: date
    last: date

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1


def day_range(from_day: str, to_day: str, *, today: date) -> DayRange:
    """The range a usage read asks for: either end may be empty (`to`: today; `from`: the
    `DEFAULT_USAGE_DAYS` days ending at `to`).

    Raises:
        InvalidArgument: a bad day, `from` after `to`, or more than `MAX_USAGE_DAYS` days.
    """
    last = parse_day(to_day, "to") if to_day else today
    first = parse_day(from_day, "from") if from_day else last - timedelta(DEFAULT_USAGE_DAYS - 1)
    if first > last:
        raise InvalidArgument("from must not be after to")
    span = DayRange(first, last)
    if span.days > MAX_USAGE_DAYS:
        raise InvalidArgument(f"a usage range covers at most {MAX_USAGE_DAYS} days")
    return span


def usage_model(model: str | None) -> str:
    """The model a call's usage is counted under: `model` if it is a valid model name, else
    `UNKNOWN_MODEL`."""
    return model if model and MODEL.fullmatch(model) else UNKNOWN_MODEL
