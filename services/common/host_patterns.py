"""Credential host binding patterns (SPEC 2.9): which upstream origins may receive a value.

Pure: no I/O. The vault validates and canonicalises patterns when they are set, the router
matches them against the origin a call connects to, and the gateway checks them first so that a
bad request is answered without a round trip. One rule, here.

A pattern is one of:

- an exact host: a DNS name (IDNA-encoded, lower case: `api.openai.com`, `bücher.example` is
  stored as `xn--bcher-kva.example`), an IPv4 address (`127.0.0.1`) or an IPv6 address in
  brackets (`[::1]`);
- `*.suffix`: any subdomain of `suffix`, at any depth (`*.openai.azure.com` matches
  `x.openai.azure.com` and `a.b.openai.azure.com`), never the bare `suffix` itself;

optionally followed by `:port` (1-65535). Without a port a pattern matches only `https` on
port 443: "any port" would be too loose for a credential, and a port-less binding must never
let the value travel in clear over plain `http` (the router passes no default port for http).
A pattern with an explicit port matches that port on either scheme (`127.0.0.1:8080` for a
local upstream). An empty list of patterns means "any host".
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from services.common.errors import InvalidArgument

MAX_PATTERNS = 32
MAX_PATTERN_LENGTH = 253

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_PORT = re.compile(r"^[0-9]{1,5}$")


@dataclass(frozen=True)
class HostPattern:
    """A parsed pattern: `host` is canonical (IDNA, lower case; IPv6 without brackets)."""

    host: str
    wildcard: bool
    port: int | None

    def text(self) -> str:
        """The canonical text of the pattern."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        prefix = "*." if self.wildcard else ""
        return f"{prefix}{host}" + (f":{self.port}" if self.port is not None else "")

    def matches(self, host: str, port: int, default_port: int) -> bool:
        """Whether a connection to `host` (canonical) on `port` is allowed by this pattern."""
        wanted_port = self.port if self.port is not None else default_port
        if port != wanted_port:
            return False
        if self.wildcard:
            return host.endswith("." + self.host)
        return host == self.host


def _bad(pattern: str, why: str) -> InvalidArgument:
    # A pattern is a host name, not a secret: naming it helps the user fix it.
    shown = pattern if len(pattern) <= 80 else pattern[:80] + "..."
    return InvalidArgument(f"invalid host pattern {shown!r}: {why}")


def _dns_name(pattern: str, name: str) -> str:
    try:
        encoded = name.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise _bad(pattern, "not a valid host name") from None
    labels = encoded.split(".")
    if not all(_LABEL.match(label) for label in labels):
        raise _bad(pattern, "not a valid host name")
    if labels[-1].isdigit():
        raise _bad(pattern, "not a valid host name or IPv4 address")
    return encoded


def _split_port(pattern: str, text: str) -> tuple[str, int | None]:
    if text.startswith("[") or text.startswith("*.["):
        host, sep, rest = text.partition("]")
        host += "]"
        if not sep:
            raise _bad(pattern, "an IPv6 address needs a closing ']'")
        if not rest:
            return host, None
        if not rest.startswith(":"):
            raise _bad(pattern, "unexpected text after the IPv6 address")
        return host, _port(pattern, rest[1:])
    host, sep, port = text.rpartition(":")
    if not sep:
        return text, None
    return host, _port(pattern, port)


def _port(pattern: str, text: str) -> int:
    if not _PORT.match(text) or not 1 <= int(text) <= 65535:
        raise _bad(pattern, "the port must be a number from 1 to 65535")
    return int(text)


def parse_pattern(pattern: str) -> HostPattern:
    """Parse one pattern; InvalidArgument naming it if it is not one."""
    if not isinstance(pattern, str) or not pattern:
        raise _bad(str(pattern), "empty")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise _bad(pattern, f"longer than {MAX_PATTERN_LENGTH} characters")
    if pattern != pattern.strip() or any(c in pattern for c in "/@?# \t"):
        raise _bad(pattern, "give a host, `*.suffix` or either with `:port`, not a URL")
    host_text, port = _split_port(pattern, pattern)
    wildcard = host_text.startswith("*.")
    if wildcard:
        host_text = host_text[2:]
    if "*" in host_text:
        raise _bad(pattern, "'*' is only allowed as the first label, as in `*.example.com`")
    if host_text.startswith("[") and host_text.endswith("]"):
        if wildcard:
            raise _bad(pattern, "an IP address cannot have a wildcard")
        try:
            address = ipaddress.IPv6Address(host_text[1:-1])
        except ValueError:
            raise _bad(pattern, "not a valid IPv6 address") from None
        return HostPattern(address.compressed, False, port)
    try:
        ipv4 = ipaddress.IPv4Address(host_text)
    except ValueError:
        pass
    else:
        if wildcard:
            raise _bad(pattern, "an IP address cannot have a wildcard")
        return HostPattern(str(ipv4), False, port)
    if ":" in host_text:
        raise _bad(pattern, "write an IPv6 address in brackets, as in `[::1]:8443`")
    host = _dns_name(pattern, host_text.rstrip(".") if host_text.endswith(".") else host_text)
    if wildcard and "." not in host:
        raise _bad(pattern, "a wildcard needs a suffix of at least two labels")
    return HostPattern(host, wildcard, port)


def canonical_patterns(patterns: Iterable[str]) -> tuple[str, ...]:
    """Validate `patterns` and return their canonical texts, sorted and de-duplicated.

    Raises:
        InvalidArgument: a pattern is invalid (the message names it) or there are more than
            `MAX_PATTERNS`.
    """
    canonical = sorted({parse_pattern(pattern).text() for pattern in patterns})
    if len(canonical) > MAX_PATTERNS:
        raise InvalidArgument(f"at most {MAX_PATTERNS} host patterns per credential")
    return tuple(canonical)


def patterns_json(patterns: Sequence[str]) -> str:
    """The stored form of canonical patterns: a compact JSON list (`[]` when unbound)."""
    return json.dumps(list(patterns), separators=(",", ":"))


def patterns_from_json(text: str) -> tuple[str, ...]:
    """The patterns of a stored JSON list (as stored: re-validated by the seal, not here)."""
    value = json.loads(text)
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError("stored host patterns are not a list of strings")
    return tuple(value)


def _canonical_host(host: str) -> str:
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return ipaddress.ip_address(text).compressed
    except ValueError:
        pass
    try:
        return text.rstrip(".").encode("idna").decode("ascii").lower()
    except UnicodeError:
        return text.lower()


def host_allowed(patterns: Sequence[str], host: str, port: int, default_port: int = 443) -> bool:
    """Whether a call connecting to `host:port` may carry a credential bound to `patterns`.

    Args:
        patterns: canonical patterns; empty means any host.
        host: the host the call connects to (as in its URL; IDNA or Unicode, any case).
        port: the port it connects to.
        default_port: the port a pattern without a port stands for: 443 for https; the
            router passes -1 (no port) for plain http, so that only an explicit port matches.
    """
    if not patterns:
        return True
    canonical = _canonical_host(host)
    for text in patterns:
        try:
            pattern = parse_pattern(text)
        except InvalidArgument:
            continue  # never stored; a corrupt one allows nothing
        if pattern.matches(canonical, port, default_port):
            return True
    return False
