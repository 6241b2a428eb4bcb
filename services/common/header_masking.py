"""Masking of provider header values in responses, and the literal-secret warning (SPEC 2.3);
masking of credential values for screens that need no plaintext (SPEC 2.2 `?masked=true`).

Pure (no I/O, no grpc); the vault's ProviderService, the router's Preview and the gateway use it.

**Sensitive header names** (case-insensitive): `Authorization`, `Proxy-Authorization`,
`X-API-Key`, `Api-Key`, `Cookie`, `Set-Cookie`, and every name containing `key`, `token`,
`secret`, `auth`, `password` or `cookie`.

**The rule.** The value of a sensitive header is shown as is only when its only secret parts
are placeholders, decided precisely as follows: remove the well-formed placeholders
`{{credential:KEY}}` and split the rest into words on whitespace and the separators `, ; = :`.
These words are not secret:

- the authorization scheme words `Bearer`, `Basic`, `Token`, `Digest`, `ApiKey`, `Api-Key`,
  `Key`, `Bot` and `OAuth` (any case);
- a name joined by `=` to a placeholder (a cookie or parameter name: `session` in
  `session={{credential:s}}`);
- punctuation with no letter or digit (the `-` in `{{credential:a}}-{{credential:b}}`).

The value is shown when no other word is left (`Bearer {{credential:k}}`, `""`, `Bearer`).
Anything else is `MASKED`, however short: a literal value (`Bearer sk-123`, `Cookie: a=b`), a
literal beside a placeholder (`Bearer {{credential:k}} sk-123`,
`Basic {{credential:user}}:hunter2`), or a malformed placeholder (`{{credential: k}}` leaves the
word `{{credential`). A value that is not secret but looks literal is masked too: hiding
configuration costs a look at the stored provider, showing a password cannot be undone. Values
of other headers are always shown.

A sensitive header with any value that would be masked gets the warning
`header NAME holds a literal secret; use {{credential:...}}`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from services.common.placeholders import PLACEHOLDER

MASKED = "MASKED"
LITERAL_SECRET_WARNING = "header {name} holds a literal secret; use {{{{credential:...}}}}"

SENSITIVE_NAMES = frozenset(
    {"authorization", "proxy-authorization", "x-api-key", "api-key", "cookie", "set-cookie"}
)
SENSITIVE_PARTS = ("key", "token", "secret", "auth", "password", "cookie")
SCHEME_WORDS = frozenset(
    {"bearer", "basic", "token", "digest", "apikey", "api-key", "key", "bot", "oauth"}
)
_WORD_SEPARATORS = re.compile(r"[\s,;=:]+")
# A cookie or parameter name whose value is a placeholder (`session=` in `session={{...}}`).
_PARAMETER_NAME = re.compile(r"[^\s,;=:]+(?==" + PLACEHOLDER.pattern + ")")
_LETTER_OR_DIGIT = re.compile(r"[A-Za-z0-9]")


def is_sensitive_header(name: str) -> bool:
    """Whether a header's values may hold a secret and so are masked in responses."""
    lowered = name.strip().lower()
    return lowered in SENSITIVE_NAMES or any(part in lowered for part in SENSITIVE_PARTS)


def only_placeholders_are_secret(value: str) -> bool:
    """True when every secret-looking part of `value` is a well-formed placeholder."""
    rest = PLACEHOLDER.sub(" ", _PARAMETER_NAME.sub(" ", value))
    return not any(
        word.lower() not in SCHEME_WORDS and _LETTER_OR_DIGIT.search(word)
        for word in _WORD_SEPARATORS.split(rest)
    )


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
