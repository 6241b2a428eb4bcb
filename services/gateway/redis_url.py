"""`GATEWAY_REDIS_URL`: where the gateways share their rate limits (unset: each keeps its own).

The URL is one redis-py reads: `redis://[user:password@]host[:port][/db]`, `rediss://` for
TLS, or `unix:///path/to/redis.sock[?db=N]`. Its password never appears in a log line or a
`repr`: `str()` of a `RedisUrl` shows the URL with the password masked.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from services.common.secret_url import SecretUrl

VARIABLE = "GATEWAY_REDIS_URL"
_SCHEMES = ("redis", "rediss", "unix")


class RedisUrl(SecretUrl):
    """A Redis connection URL as redis-py's `from_url` reads it."""


def parse_redis_url(text: str | None) -> RedisUrl | None:
    """The `GATEWAY_REDIS_URL` value as a URL (None when unset); ValueError names the variable
    and what is wrong (never the password)."""
    if text is None:
        return None
    url = RedisUrl(text)
    scheme, sep, _ = text.partition("://")
    if not sep or scheme not in _SCHEMES:
        # The value is not echoed: without a known scheme, nothing says where a password is.
        got = f"the scheme {scheme!r}" if sep and scheme.isalpha() else "no scheme"
        raise ValueError(
            f"{VARIABLE} must be a redis://, rediss:// or unix:// URL, e.g. "
            f"redis://redis:6379/0 (got {got})"
        )
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError(f"{VARIABLE}: not a valid Redis URL: {url.redacted}") from None
    if scheme == "unix" and not parts.path:
        raise ValueError(f"{VARIABLE}: a unix URL names the socket, e.g. unix:///run/redis.sock")
    if scheme != "unix" and not parts.hostname:
        raise ValueError(f"{VARIABLE}: the URL names no host: {url.redacted}")
    return url
