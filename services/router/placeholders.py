"""The placeholder engine (SPEC 3.1-3.2): pure, no I/O, no grpc.

`{{credential:KEY}}` in a header value is replaced by the user's value for KEY, in one pass,
left to right; an inserted value is never scanned again. Text that looks like a placeholder but
is not one (`{{credential: key}}`, `{{ credential:key }}`, `{{credential:}}`,
`{{Credential:key}}`, a key with characters outside `A-Z a-z 0-9 _ . -` or longer than 128) is
left exactly as it is and reported as the warning `malformed placeholder`. A key missing from
the map leaves its placeholder unreplaced and is reported as `Credential not found: KEY`.

Warnings name keys only, never values.

Bounds (SPEC 3.5, `services.common.header_bounds`): `substitute_headers(..., bounds=...)` stops
building a value as soon as it passes what the bounds leave for it and raises
`HeaderTooLarge` naming the header, so a template of a thousand placeholders for a 16 KiB
credential never becomes a 16 MiB string.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from services.common.header_bounds import HeaderBounds, HeaderBudget
from services.common.placeholders import PLACEHOLDER, referenced_keys
from services.router.errors import HeaderTooLarge
from services.router.host_binding import not_allowed_warning

__all__ = [
    "MALFORMED_WARNING",
    "PLACEHOLDER",
    "SubstitutionTooLarge",
    "Substituted",
    "SubstitutedHeaders",
    "missing_warning",
    "referenced_keys",
    "render_value",
    "substitute_headers",
    "substitute_placeholders",
]

# The one definition of the syntax lives in services.common.placeholders (the vault uses it to
# pick the keys Resolve returns). At each position a well-formed placeholder is tried first;
# failing that, anything that opens like one (`{{`, optional blanks, `credential` in any case)
# up to the next brace is a lookalike.
_SCANNER = re.compile(
    r"(?P<ok>" + PLACEHOLDER.pattern + r")|\{\{(?i:\s*credential)[^{}]*(?:\}\}?)?"
)

MALFORMED_WARNING = "malformed placeholder"


def missing_warning(key: str) -> str:
    """The warning for a key that is not in the user's map."""
    return f"Credential not found: {key}"


def render_value(key: str, value: str) -> str:
    """The default rendering of a substituted value: the value itself."""
    return value


class SubstitutionTooLarge(Exception):
    """A substituted value would pass its limit; raised before it is built."""


@dataclass(frozen=True)
class Substituted:
    """One header value after substitution."""

    text: str = field(repr=False)
    missing_keys: tuple[str, ...] = ()
    malformed: int = 0
    substituted_keys: tuple[str, ...] = ()


def substitute_placeholders(
    text: str,
    values: Mapping[str, str],
    render: Callable[[str, str], str] = render_value,
    *,
    limit: int | None = None,
) -> Substituted:
    """Replace every well-formed placeholder whose key is in `values`.

    Args:
        text: a header value, possibly holding placeholders.
        values: credential key -> value.
        render: how a substituted value is written (Preview passes a masking function).
        limit: the most characters the result may have; None for no limit.

    Returns:
        The new text, the keys that were missing (in order of appearance, repeated if repeated),
        the number of malformed lookalikes, and the keys substituted.

    Raises:
        SubstitutionTooLarge: the result would be longer than `limit`; it is never built (what
            is held is at most `limit` characters plus one piece).
    """
    if "{{" not in text:  # the common fast path: nothing to scan
        if limit is not None and len(text) > limit:
            raise SubstitutionTooLarge
        return Substituted(text)
    out: list[str] = []
    missing: list[str] = []
    used: list[str] = []
    malformed = 0
    last = 0
    size = 0
    for match in _SCANNER.finditer(text):
        well_formed = PLACEHOLDER.fullmatch(match.group()) if match.group("ok") else None
        if well_formed is None:
            malformed += 1
            continue
        key = well_formed.group(1)
        if key not in values:
            missing.append(key)
            continue
        rendered = render(key, values[key])
        size += match.start() - last + len(rendered)
        if limit is not None and size > limit:
            raise SubstitutionTooLarge
        out.append(text[last : match.start()])
        out.append(rendered)
        used.append(key)
        last = match.end()
    if limit is not None and size + len(text) - last > limit:
        raise SubstitutionTooLarge
    out.append(text[last:])
    return Substituted("".join(out), tuple(missing), malformed, tuple(used))


@dataclass(frozen=True)
class SubstitutedHeaders:
    """A provider's headers after substitution, and what the substitution noticed."""

    headers: tuple[tuple[str, str], ...] = field(repr=False)
    warnings: tuple[str, ...]
    missing_keys: tuple[str, ...]
    refused_keys: tuple[str, ...] = ()


def substitute_headers(
    headers: Iterable[tuple[str, Sequence[str]]],
    values: Mapping[str, str],
    render: Callable[[str, str], str] = render_value,
    *,
    bounds: HeaderBounds | None = None,
    refused: Collection[str] = (),
) -> SubstitutedHeaders:
    """Substitute placeholders in every value of every header (names are never touched).

    Warnings are de-duplicated and keep the order in which they first occurred. Keys in
    `refused` (bound credentials this call's host may not receive: `host_binding`) are left
    unreplaced like missing ones but reported as `Credential not allowed for host: KEY`.

    Raises:
        HeaderTooLarge: with `bounds`, a value or all lines together would pass a bound; the
            message names the first header that does.
    """
    lines: list[tuple[str, str]] = []
    warnings: dict[str, None] = {}
    missing: dict[str, None] = {}
    not_allowed: dict[str, None] = {}
    budget = HeaderBudget(bounds) if bounds is not None else None
    for name, header_values in headers:
        for value in header_values:
            if budget is None:
                result = substitute_placeholders(value, values, render)
            else:
                limit = budget.value_limit(name)
                try:
                    result = substitute_placeholders(value, values, render, limit=limit)
                except SubstitutionTooLarge:
                    raise HeaderTooLarge(budget.problem(name, limit + 1)) from None
                budget.take(name, len(result.text))
            lines.append((name, result.text))
            for key in result.missing_keys:
                if key in refused:
                    not_allowed.setdefault(key, None)
                    warnings.setdefault(not_allowed_warning(key), None)
                else:
                    missing.setdefault(key, None)
                    warnings.setdefault(missing_warning(key), None)
            if result.malformed:
                warnings.setdefault(MALFORMED_WARNING, None)
    return SubstitutedHeaders(tuple(lines), tuple(warnings), tuple(missing), tuple(not_allowed))
