"""Masking of provider header values in responses, and the literal-secret warning (SPEC 2.3);
masking of credential values for screens that need no plaintext (SPEC 2.2 `?masked=true`).

Pure (no I/O, no grpc); the vault's ProviderService, the router's Preview and the gateway use it.

**Sensitive header names** (case-insensitive): `Authorization`, `Proxy-Authorization`,
`X-API-Key`, `Api-Key`, `Cookie`, `Set-Cookie`, and every name containing `key`, `token`,
`secret`, `auth`, `passw` (`password`, `X-Passwd`), `cookie`, `credential`, `jwt`,
`signature` or `session`.

**The rule.** The value of a sensitive header is shown as is only when it is made of nothing
but placeholders `{{credential:KEY}}` in one of these shapes (RFC 9110 11.4 credentials, and
cookie or parameter lists), whitespace around it aside:

- empty, or a bare scheme word;
- `SCHEME PLACEHOLDERS` for a token68 scheme, `Bearer`, `Basic`, `Bot`, `ApiKey`, `Api-Key`
  or `Key` (any case, followed by a space): `Bearer {{credential:k}}`,
  `Basic {{credential:user}}:{{credential:password}}`;
- `[SCHEME ]LIST` for a parameter scheme, `Token`, `Digest` or `OAuth`, or no scheme: items
  separated by whitespace, `,` or `;`, each either PLACEHOLDERS or `name=PLACEHOLDERS`
  (optionally in double quotes) whose name is 1-64 of `A-Z a-z 0-9 _ -`:
  `session={{credential:s}}; csrf={{credential:c}}`, `Token token={{credential:t}}`;

where PLACEHOLDERS is one or more placeholders, each joined to the next by nothing or by one
`:`, `-` or `.`. Anything else is `MASKED`, however short: a literal value (`Bearer sk-123`,
`Cookie: a=b`), a literal beside a placeholder (`Bearer {{credential:k}} sk-123`,
`Basic {{credential:user}}:hunter2`, `Basic {{credential:u}}:!@#$`), a literal written as a
parameter name where the scheme takes none (`Bearer sk-live-abc={{credential:x}}`), or a
malformed placeholder (`{{credential: k}}`). A value that is not secret but does not fit is
masked too: hiding configuration costs a look at the stored provider, showing a password
cannot be undone. Values of other headers are always shown.

A sensitive header with any value that would be masked gets the warning
`header NAME holds a literal secret; use {{credential:...}}`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from services.common.credential_rules import KEY_PATTERN

MASKED = "MASKED"
LITERAL_SECRET_WARNING = "header {name} holds a literal secret; use {{{{credential:...}}}}"

SENSITIVE_NAMES = frozenset(
    {"authorization", "proxy-authorization", "x-api-key", "api-key", "cookie", "set-cookie"}
)
SENSITIVE_PARTS = (
    "key",
    "token",
    "secret",
    "auth",
    "passw",
    "cookie",
    "credential",
    "jwt",
    "signature",
    "session",
)
TOKEN68_SCHEMES = ("bearer", "basic", "bot", "apikey", "api-key", "key")
PARAMETER_SCHEMES = ("token", "digest", "oauth")
SCHEME_WORDS = frozenset(TOKEN68_SCHEMES + PARAMETER_SCHEMES)

_P = r"\{\{credential:" + KEY_PATTERN.pattern + r"\}\}"
_PLACEHOLDERS = rf"{_P}(?:[:.\-]?{_P})*"
_ITEM = rf'(?:{_PLACEHOLDERS}|[A-Za-z0-9_\-]{{1,64}}=(?:{_PLACEHOLDERS}|"{_PLACEHOLDERS}"))'
_LIST = rf"{_ITEM}(?:[\s,;]+{_ITEM})*[\s,;]*"


def _alternation(words: Iterable[str]) -> str:
    return "|".join(re.escape(word) for word in sorted(words, key=len, reverse=True))


_SHOWN = re.compile(
    rf"(?i:{_alternation(SCHEME_WORDS)})"  # a bare scheme word
    rf"|(?i:{_alternation(TOKEN68_SCHEMES)})\s+{_PLACEHOLDERS}"
    rf"|(?:(?i:{_alternation(PARAMETER_SCHEMES)})\s+)?{_LIST}"
)
"""A sensitive header value, stripped, that is shown as is (use `fullmatch`; see the module's
rule). Every repetition is delimited (placeholders by braces, items by separators), so a
16 KiB value is matched in linear time."""


def is_sensitive_header(name: str) -> bool:
    """Whether a header's values may hold a secret and so are masked in responses."""
    lowered = name.strip().lower()
    return lowered in SENSITIVE_NAMES or any(part in lowered for part in SENSITIVE_PARTS)


def only_placeholders_are_secret(value: str) -> bool:
    """True when `value` is nothing but placeholders in a shape the module's rule shows."""
    stripped = value.strip()
    return not stripped or _SHOWN.fullmatch(stripped) is not None


def mask_header_value(name: str, value: str) -> str:
    """The value as a response shows it: as is, or `MASKED` (see the module's rule)."""
    if not is_sensitive_header(name) or only_placeholders_are_secret(value):
        return value
    return MASKED


def mask_headers(headers: Mapping[str, Iterable[str]]) -> dict[str, list[str]]:
    """Every value of every header as a response shows it."""
    return {name: [mask_header_value(name, v) for v in values] for name, values in headers.items()}


def literal_secret_warnings(headers: Mapping[str, Iterable[str]]) -> list[str]:
    """One warning per sensitive header holding a value that is masked, in header order."""
    return [
        LITERAL_SECRET_WARNING.format(name=name)
        for name, values in headers.items()
        if any(mask_header_value(name, value) == MASKED for value in values)
    ]


MIN_PARTIALLY_SHOWN = 16


def mask_credential_value(value: str) -> str:
    """SPEC 2.2: the first 3 and last 4 characters of a value of at least 16, joined by `...`;
    `MASKED` for a shorter one.

    The joint has a fixed width, so the masked form does not tell the value's length.
    """
    if len(value) < MIN_PARTIALLY_SHOWN:
        return MASKED
    return f"{value[:3]}...{value[-4:]}"
