"""Bounded sets of metric label values, for labels whose values users choose.

A Prometheus series exists per distinct label value, and a provider or model name is whatever a
user typed: left alone, one user could create series without end. `BoundedLabels` passes the
first `limit` distinct values it sees (each at most `max_length` characters) and maps every
later one, and every longer one, to `overflow`. What passes is decided once per value, for the
life of the process: a series never changes label.
"""

from __future__ import annotations

import threading

DEFAULT_LIMIT = 100
DEFAULT_MAX_LENGTH = 128
OVERFLOW = "other"


class BoundedLabels:
    """The first `limit` distinct values pass; later ones become `overflow`."""

    def __init__(
        self,
        limit: int = DEFAULT_LIMIT,
        *,
        max_length: int = DEFAULT_MAX_LENGTH,
        overflow: str = OVERFLOW,
    ) -> None:
        if limit < 0:
            raise ValueError("limit must not be negative")
        self.limit = limit
        self.max_length = max_length
        self.overflow = overflow
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"BoundedLabels(limit={self.limit}, seen={len(self._seen)})"

    def __call__(self, value: str) -> str:
        """`value` if it is one of the first `limit` distinct values seen, else `overflow`."""
        if value in self._seen:
            return value
        if len(value) > self.max_length or value == self.overflow:
            return self.overflow
        with self._lock:
            if value in self._seen:
                return value
            if len(self._seen) >= self.limit:
                return self.overflow
            self._seen.add(value)
        return value
