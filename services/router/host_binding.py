"""Credential host binding at the router (SPEC 2.9): pure, no I/O, no grpc.

The vault returns, with a call's values, the bound hosts of those that are bound. Before
substituting, each bound value is checked against the origin the call connects to (the target
URL's scheme, host and port: the origin the egress policy checks). A value whose patterns do not
match is taken out of the substitution: its placeholder stays as it is, as for a missing
credential, and is reported as `Credential not allowed for host: KEY` (key names only).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from services.common.host_patterns import host_allowed

# The port a port-less pattern stands for, by scheme. Plain http has none: a binding without a
# port never sends a value in clear (port -1 matches no connection).
_DEFAULT_PORTS = {"https": 443}


def not_allowed_warning(key: str) -> str:
    """The warning for a bound credential that the call's origin may not receive."""
    return f"Credential not allowed for host: {key}"


@dataclass(frozen=True)
class OriginValues:
    """The values a call to one origin may carry, and the keys refused to it (sorted)."""

    values: dict[str, str] = field(repr=False)
    refused_keys: tuple[str, ...] = ()


def values_for_origin(
    values: Mapping[str, str],
    value_hosts: Mapping[str, Sequence[str]],
    *,
    scheme: str,
    host: str,
    port: int,
) -> OriginValues:
    """The values whose binding allows `scheme://host:port` (an unbound value always does)."""
    default_port = _DEFAULT_PORTS.get(scheme.lower(), -1)
    allowed: dict[str, str] = {}
    refused: list[str] = []
    for key, value in values.items():
        patterns = value_hosts.get(key, ())
        if host_allowed(patterns, host, port, default_port):
            allowed[key] = value
        else:
            refused.append(key)
    return OriginValues(allowed, tuple(sorted(refused)))
