"""How large a provider's headers may grow once placeholders are substituted (SPEC 3.5).

Pure: no I/O, no grpc. The one home of the rule for the router (which enforces it while it
substitutes, before anything is sent) and the vault (which refuses, when a provider is saved,
templates that the user's current credential values would already take over the bounds).

A template is small (at most 16 KiB a value, SPEC 2.3), but every placeholder in it may stand
for a 16 KiB credential: 1,000 `{{credential:big}}` in one value would become 16 MiB. So the
size after substitution is bounded, per value and for all header lines of one request:

- `DEFAULT_MAX_HEADER_VALUE_BYTES` = 32 KiB per value: one 16 KiB credential (the largest value
  SPEC 2.2 allows) inside a 16 KiB template always fits, and it is what common edges accept
  for one header line (nginx `large_client_header_buffers` is 8 KiB by default and is raised
  to 16-32 KiB for token headers; AWS ALB takes 16 KiB; Cloudflare 32 KiB): anything larger
  would be refused upstream anyway.
- `DEFAULT_MAX_HEADERS_BYTES` = 64 KiB for all lines together: AWS ALB's limit for the whole
  header block, and above what nginx (4 x 8 KiB by default) and Cloudflare (32 KiB of request
  headers) accept.

A line's size is `len(name) + 2 + len(value) + 2` (`name: value` and CRLF), values in bytes.
Substituted values are printable ASCII (SPEC 2.2-2.3), so their length in characters is their
size in bytes. Messages name the header, never a value.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from services.common.credential_rules import describe
from services.common.placeholders import PLACEHOLDER

DEFAULT_MAX_HEADER_VALUE_BYTES = 32 * 1024
DEFAULT_MAX_HEADERS_BYTES = 64 * 1024
LINE_OVERHEAD = 4
"""`: ` between name and value, CRLF after the value."""

REASON = "header_too_large"
"""The error reason (REST error code) of a header over a bound, in the router and the vault."""


@dataclass(frozen=True)
class HeaderBounds:
    """The two limits; `ROUTER_MAX_HEADER_VALUE_BYTES` and `ROUTER_MAX_HEADERS_BYTES` set them
    in the router, the vault checks saved providers against the defaults."""

    max_value_bytes: int = DEFAULT_MAX_HEADER_VALUE_BYTES
    max_total_bytes: int = DEFAULT_MAX_HEADERS_BYTES

    def __post_init__(self) -> None:
        if self.max_value_bytes < 1 or self.max_total_bytes < 1:
            raise ValueError("header bounds must be at least 1 byte")


def value_too_large(name: str, limit: int) -> str:
    """The public message for a value of header `name` over `limit` bytes."""
    return (
        f"header {describe(name)} would be longer than {limit} bytes once its placeholders are"
        " substituted"
    )


def headers_too_large(name: str, limit: int) -> str:
    """The public message for header lines that pass `limit` bytes together at `name`."""
    return (
        f"the request's headers would be longer than {limit} bytes together once placeholders"
        f" are substituted (at header {describe(name)})"
    )


class HeaderBudget:
    """What is left of the bounds while one request's header lines are built, line by line.

    `value_limit(name)` is the most bytes the next value of `name` may have (the smaller of the
    per-value bound and what the total leaves); `take(name, size)` charges a finished line and
    returns the problem, or None. A caller that builds a value stops as soon as it passes
    `value_limit`, so that nothing larger than a bound is ever held in memory.
    """

    __slots__ = ("_bounds", "_used")

    def __init__(self, bounds: HeaderBounds) -> None:
        self._bounds = bounds
        self._used = 0

    def value_limit(self, name: str) -> int:
        left = self._bounds.max_total_bytes - self._used - len(name) - LINE_OVERHEAD
        return max(-1, min(self._bounds.max_value_bytes, left))

    def problem(self, name: str, size: int) -> str:
        """Why a value of `size` bytes (over `value_limit(name)`) does not fit."""
        if size > self._bounds.max_value_bytes:
            return value_too_large(name, self._bounds.max_value_bytes)
        return headers_too_large(name, self._bounds.max_total_bytes)

    def take(self, name: str, size: int) -> str | None:
        """Charge one line of `name` with a value of `size` bytes; its problem, or None."""
        if size > self.value_limit(name):
            return self.problem(name, size)
        self._used += len(name) + LINE_OVERHEAD + size
        return None


def substituted_size(template: str, values: Mapping[str, str]) -> int:
    """The size of `template` once every well-formed placeholder whose key is in `values` is
    replaced by its value (computed, not built). Missing keys and lookalikes stay as they are,
    as the router leaves them."""
    size = len(template)
    for match in PLACEHOLDER.finditer(template):
        value = values.get(match.group(1))
        if value is not None:
            size += len(value) - (match.end() - match.start())
    return size


def headers_problem(
    headers: Iterable[tuple[str, Sequence[str]]],
    values: Mapping[str, str],
    bounds: HeaderBounds,
) -> str | None:
    """The first header whose lines, substituted with `values`, break a bound; or None."""
    budget = HeaderBudget(bounds)
    for name, header_values in headers:
        for template in header_values:
            problem = budget.take(name, substituted_size(template, values))
            if problem:
                return problem
    return None


__all__ = [
    "DEFAULT_MAX_HEADERS_BYTES",
    "DEFAULT_MAX_HEADER_VALUE_BYTES",
    "LINE_OVERHEAD",
    "REASON",
    "HeaderBounds",
    "HeaderBudget",
    "headers_problem",
    "headers_too_large",
    "substituted_size",
    "value_too_large",
]
