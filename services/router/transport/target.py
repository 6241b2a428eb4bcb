"""Where a URL sends a request: `UpstreamTarget`, parsed once per call.

The common URL (http or https, an ASCII host name or a canonical dotted IPv4, an optional port,
a path and query of characters httpx keeps as they are) is split by one regex; anything else
(IPv6, IDNA, odd characters, number-like hosts such as 127.1) goes through `httpx.URL`, which
does what a client must. Both give exactly what `httpx.URL` gives (tests/router/
test_transport_target.py checks it). Parse errors are httpx's and httpcore's here; `errors.py`
maps them to the router's where a caller can meet them.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from urllib.parse import unquote

import httpcore
import httpx

OriginKey = tuple[bytes, bytes, int]
"""(scheme, host, port) as httpcore connects to them: what a pooled connection is reused for."""

# The common URL that needs no normalisation (an ASCII name host, an optional port, a path and
# query of characters httpx.URL would keep as they are): parsed without httpx.URL's cost.
_PLAIN_URL = re.compile(
    r"(https?)://([A-Za-z0-9](?:[A-Za-z0-9.\-]*[A-Za-z0-9])?)(?::([0-9]{1,5}))?"
    r"((?:/(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})*)?"
    r"(?:\?(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2})*)?)"
)
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _plain_host(host: str) -> bool:
    """A host name httpx.URL keeps as is (lowercased): not number-like, or a canonical IPv4."""
    if not host[-1].isdigit():
        return True
    return _canonical_ipv4(host)


@functools.lru_cache(maxsize=256)
def _canonical_ipv4(host: str) -> bool:
    # Cached: an upstream at an IP address (a self-hosted model) is parsed on every call, and
    # ipaddress parses in Python.
    try:
        return str(ipaddress.IPv4Address(host)) == host
    except ValueError:
        return False


class UpstreamTarget:
    """Where a URL sends a request: the origin to connect to, `Host`, the request target.

    Parsed once per call (by `Router.prepare`, or by `UpstreamClient.stream` when the request
    comes without one); `origin_text` and `path` are what the call's log line shows.
    """

    __slots__ = (
        "default_port",
        "host",
        "key",
        "netloc",
        "origin",
        "port",
        "scheme",
        "target",
        "url",
    )

    def __init__(self, url: str) -> None:
        """Raises httpx.InvalidURL or httpcore.UnsupportedProtocol for a URL it cannot send to."""
        self.url = url
        plain = _PLAIN_URL.fullmatch(url)
        if plain is not None and _plain_host(plain.group(2)):
            scheme, host, raw_port, target = plain.groups()
            host = host.lower()
            default = _DEFAULT_PORTS[scheme]
            port = default if raw_port is None else int(raw_port)
            if 0 < port < 65536:
                self._set(scheme, host, port, port == default, target or "/")
                return
        # httpx.URL does what a client must: IDNA hosts, percent-encoding, default ports.
        parsed = httpx.URL(url)
        if parsed.scheme not in ("http", "https"):
            raise httpcore.UnsupportedProtocol(f"unsupported scheme {parsed.scheme!r}")
        if not parsed.raw_host:
            raise httpcore.UnsupportedProtocol("the URL has no host")
        port = parsed.port or _DEFAULT_PORTS[parsed.scheme]
        self.scheme = parsed.scheme
        self.host = parsed.host
        self.port = port
        self.default_port = parsed.port is None
        self.origin = httpcore.Origin(parsed.raw_scheme, parsed.raw_host, port)
        self.key: OriginKey = (parsed.raw_scheme, parsed.raw_host, port)
        self.netloc = parsed.netloc
        self.target = parsed.raw_path

    def _set(self, scheme: str, host: str, port: int, default_port: bool, target: str) -> None:
        raw_host = host.encode("ascii")
        self.scheme = scheme
        self.host = host
        self.port = port
        self.default_port = default_port
        self.origin = httpcore.Origin(scheme.encode("ascii"), raw_host, port)
        self.key = (self.origin.scheme, raw_host, port)
        self.netloc = raw_host if default_port else b"%s:%d" % (raw_host, port)
        self.target = target.encode("ascii")

    def __repr__(self) -> str:
        return f"UpstreamTarget({self.origin_text!r})"  # no path or query: they may hold secrets

    @property
    def origin_text(self) -> str:
        """`scheme://host`, with `:port` when it is not the scheme's default."""
        port = "" if self.default_port else f":{self.port}"
        return f"{self.scheme}://{self.host}{port}"

    @property
    def path(self) -> str:
        """The path, percent-decoded, without the query."""
        return unquote(self.target.partition(b"?")[0].decode("ascii"))


def base_url_host_port(base_url: str) -> tuple[str, int]:
    """The host (IDNA-encoded, as httpcore connects to it, so that allowlist entries match
    alike) and port a call to `base_url` connects to.

    Raises:
        httpx.InvalidURL, TypeError: `base_url` is not a URL.
        httpcore.UnsupportedProtocol: it is not an absolute http or https URL with a host.
    """
    url = httpx.URL(base_url)
    if url.scheme not in ("http", "https") or not url.raw_host:
        raise httpcore.UnsupportedProtocol("not an absolute http or https URL with a host")
    return url.raw_host.decode("ascii"), url.port or (443 if url.scheme == "https" else 80)
