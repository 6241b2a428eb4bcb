"""Where the vault keeps its database: a SQLite file (the default) or a PostgreSQL URL.

`VAULT_DATABASE` holds a path or `sqlite:///path` (SQLite), or `postgresql://...` (or
`postgres://...`) for PostgreSQL. A URL's password never appears in a log line or a `repr`:
`str()` of a `PostgresUrl` shows the URL with the password masked.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from services.common.secret_url import SecretUrl

_POSTGRES_SCHEMES = ("postgresql", "postgres")


class PostgresUrl(SecretUrl):
    """A PostgreSQL connection URL (libpq form; `sslmode` and other query options kept)."""


DatabaseLocation = Path | PostgresUrl


def parse_location(text: str) -> DatabaseLocation:
    """A `VAULT_DATABASE` value as a location; ValueError names what is wrong (never the
    password)."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        return Path(text)
    if scheme == "sqlite":
        # sqlite:///relative/or/absolute: the path after the third slash, as SQLAlchemy reads it.
        if not rest.startswith("/") or rest == "/":
            raise ValueError("VAULT_DATABASE: a sqlite URL is sqlite:///path/to/vault.db")
        return Path(rest[1:])
    if scheme in _POSTGRES_SCHEMES:
        location = PostgresUrl(text)
        try:
            parts = urlsplit(text)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise ValueError(
                f"VAULT_DATABASE: not a valid PostgreSQL URL: {location.redacted}"
            ) from None
        if not parts.path.strip("/"):
            raise ValueError(f"VAULT_DATABASE: the URL names no database: {location.redacted}")
        return location
    raise ValueError(
        f"VAULT_DATABASE: unknown scheme {scheme!r} (a path, sqlite:///path or postgresql://...)"
    )
