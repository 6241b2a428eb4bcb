"""Bounded sets of metric label values, for labels whose values users choose.

A Prometheus series exists per distinct label value, and a provider or model name is whatever a
user typed: left alone, one user could create series without end, or put a pasted key into a
label. `BoundedLabels` passes the first `limit` distinct values it sees that are acceptable (at
most `max_length` characters, and passing `accept`, by default `is_label_safe`) and maps every
later or unacceptable one to `overflow`. What passes is decided once per value, for the life of
the process: a series never changes label.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable

DEFAULT_LIMIT = 100
DEFAULT_MAX_LENGTH = 64
OVERFLOW = "other"

_LABEL_TEXT = re.compile(r"[A-Za-z0-9._:/@+-]+")
# A run of 16+ letters and digits holding both: a random id or a key, not a name.
_KEY_LIKE = re.compile(r"(?=[A-Za-z0-9]*[0-9])(?=[A-Za-z0-9]*[A-Za-z])[A-Za-z0-9]{16,}")


def is_label_safe(value: str) -> bool:
    """Whether `value` reads like a name (letters, digits and `._:/@+-`), not like a key or an
    id: no run of 16 or more letters and digits mixing both (`gpt-4o-2024-08-06` passes,
    a pasted key, letters and digits mixed for 16 or more characters, does not)."""
    return bool(_LABEL_TEXT.fullmatch(value)) and not _KEY_LIKE.search(value)


class BoundedLabels:
    """The first `limit` distinct acceptable values pass; any other becomes `overflow`."""

    def __init__(
        self,
        limit: int = DEFAULT_LIMIT,
        *,
        max_length: int = DEFAULT_MAX_LENGTH,
        overflow: str = OVERFLOW,
        accept: Callable[[str], bool] | None = is_label_safe,
    ) -> None:
        if limit < 0:
            raise ValueError("limit must not be negative")
        self.limit = limit
        self.max_length = max_length
        self.overflow = overflow
        self._accept = accept
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"BoundedLabels(limit={self.limit}, seen={len(self._seen)})"

    def __call__(self, value: str) -> str:
        """`value` if it is one of the first `limit` acceptable values seen, else `overflow`."""
        if value in self._seen:
            return value
        if (
            not value
            or len(value) > self.max_length
            or value == self.overflow
            or (self._accept is not None and not self._accept(value))
        ):
            return self.overflow
        with self._lock:
            if value in self._seen:
                return value
            if len(self._seen) >= self.limit:
                return self.overflow
            self._seen.add(value)
        return value
