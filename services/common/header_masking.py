"""Masking of provider header values in responses, and the literal-secret warning (SPEC 2.3).

Pure (no I/O, no grpc); the vault's ProviderService and the gateway both use it.

**Sensitive header names** (case-insensitive): `Authorization`, `Proxy-Authorization`,
`X-API-Key`, `Api-Key`, `Cookie`, `Set-Cookie`, and every name containing `key`, `token`,
`secret`, `auth`, `password` or `cookie`.

**The rule.** The value of a sensitive header is shown as is only when its only secret parts
are placeholders, decided precisely as follows:

- remove the well-formed placeholders `{{credential:KEY}}` and split the rest into words on
  whitespace and the separators `, ; = :`; the authorization scheme words `Bearer`, `Basic`,
  `Token`, `Digest`, `ApiKey`, `Api-Key`, `Key`, `Bot` and `OAuth` (any case) are not secret;
- with at least one placeholder, the value is shown when no other word is 8 or more
  characters long;
- without a placeholder, it is shown only when there is no other word at all (`""`, `Bearer`).

Anything else is `MASKED`: a literal value (`Bearer sk-123`, `Cookie: a=b`), a literal run of
8+ characters next to a placeholder (`Bearer {{credential:k}} sk-abcdefgh`), or a malformed
placeholder (`{{credential: k}}` leaves the word `{{credential`). Short words beside a
placeholder, such as a cookie name (`session={{credential:s}}`), are shown: they carry too
little to be a secret worth hiding, and hiding them would hide the configuration the user
needs to see. Values of other headers are always shown.

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
MAX_LITERAL_WORD = 7
_WORD_SEPARATORS = re.compile(r"[\s,;=:]+")


def is_sensitive_header(name: str) -> bool:
    """Whether a header's values may hold a secret and so are masked in responses."""
    lowered = name.strip().lower()
    return lowered in SENSITIVE_NAMES or any(part in lowered for part in SENSITIVE_PARTS)


def only_placeholders_are_secret(value: str) -> bool:
    """True when every secret-looking part of `value` is a well-formed placeholder."""
    has_placeholder = PLACEHOLDER.search(value) is not None
    rest = PLACEHOLDER.sub(" ", value)
    words = [w for w in _WORD_SEPARATORS.split(rest) if w and w.lower() not in SCHEME_WORDS]
    if not has_placeholder:
        return not words
    return all(len(word) <= MAX_LITERAL_WORD for word in words)


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
