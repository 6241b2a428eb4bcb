"""Connection URLs that may hold a password (PostgreSQL, Redis): shown only with it masked.

`SecretUrl` keeps the URL as given (`.url`, for the driver) and shows it, in `str()`, `repr()`
and every message built from them, with the password replaced by `***`: the one in the userinfo
(`user:password@host`) and the `password=` and `sslpassword=` query options (libpq and redis-py
read `password`, libpq `sslpassword` for the client key; names are matched as the drivers read
them, percent-decoded and in any case). Host
and port are kept as written, never parsed, so a malformed URL can still be named in an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

SECRET_OPTIONS = frozenset({"password", "sslpassword"})
"""Query options whose value is a password (compared percent-decoded, in lower case)."""


@dataclass(frozen=True)
class SecretUrl:
    """A URL whose password never appears in a log line, an error or a `repr`."""

    url: str = field(repr=False)

    def __str__(self) -> str:
        return self.redacted

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.redacted!r})"

    def scrub(self, text: str) -> str:
        """`text` (a driver's error message, say) with every password of this URL as `***`,
        should the driver have echoed one."""
        for secret in self._passwords():
            text = text.replace(secret, "***")
        return text

    def _passwords(self) -> list[str]:
        parts = urlsplit(self.url)
        # As written and as a driver decodes it (asyncpg unquotes the userinfo password).
        found = list({parts.password, unquote(parts.password)}) if parts.password else []
        for name, _, value in (item.partition("=") for item in parts.query.split("&")):
            if value and unquote(name).lower() in SECRET_OPTIONS:
                found += {value, unquote(value)}
        return found

    @property
    def redacted(self) -> str:
        """The URL with its passwords (userinfo, `SECRET_OPTIONS` query options) as `***`."""
        parts = urlsplit(self.url)
        netloc = parts.netloc
        if parts.password is not None:
            netloc = f"{parts.username or ''}:***@{netloc.rpartition('@')[2]}"
        query = "&".join(
            f"{name}=***" if unquote(name).lower() in SECRET_OPTIONS else f"{name}{sep}{value}"
            for name, sep, value in (item.partition("=") for item in parts.query.split("&"))
        )
        # Not urlunsplit: it drops the `//` of `unix:///path` (an empty host).
        text = f"{parts.scheme}://{netloc}{parts.path}"
        return (
            text + (f"?{query}" if query else "") + (f"#{parts.fragment}" if parts.fragment else "")
        )
