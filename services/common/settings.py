"""Typed readers of environment variables, used by each service's frozen settings object.

Each raises ValueError naming the variable (never echoing a value that could be a secret).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from services.common.grpc_server import ClientTls

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def env_str(environ: Mapping[str, str], name: str, default: str) -> str:
    """The variable's value, or `default` when unset or empty."""
    value = environ.get(name, "")
    return value if value != "" else default


def env_optional(environ: Mapping[str, str], name: str) -> str | None:
    """The variable's value, or None when unset or empty."""
    value = environ.get(name, "")
    return value or None


def env_int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "")
    if raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer") from None


def env_float(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name, "")
    if raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{name} must be a finite number")
    return value


def env_bool(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = environ.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ValueError(f"{name} must be true or false")


def env_path(environ: Mapping[str, str], name: str, default: Path) -> Path:
    raw = environ.get(name, "")
    return Path(raw) if raw else default


def env_optional_path(environ: Mapping[str, str], name: str) -> Path | None:
    raw = environ.get(name, "")
    return Path(raw) if raw else None


def split_listen(listen: str) -> tuple[str, int]:
    """`host:port` (or `[v6 address]:port`) as host and port; ValueError if it is not one."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError("not host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def env_metrics_listen(environ: Mapping[str, str], name: str) -> str | None:
    """A metrics endpoint's `host:port`, or None when unset or empty (no endpoint)."""
    value = environ.get(name, "").strip()
    if not value:
        return None
    try:
        split_listen(value)
    except ValueError:
        raise ValueError(f"{name} must be host:port, such as 0.0.0.0:9464") from None
    return value


def state_dir(environ: Mapping[str, str]) -> Path:
    """`STATE_DIR`, shared by the services for local state (default `.state`)."""
    return env_path(environ, "STATE_DIR", Path(".state"))


def env_client_tls(environ: Mapping[str, str], prefix: str) -> ClientTls | None:
    """Client TLS to a backend: `<prefix>_CA` turns it on (None when unset), `<prefix>_CERT`
    and `<prefix>_KEY` together add a client certificate for mutual TLS."""
    ca = env_optional_path(environ, f"{prefix}_CA")
    cert = env_optional_path(environ, f"{prefix}_CERT")
    key = env_optional_path(environ, f"{prefix}_KEY")
    if (cert is None) != (key is None):
        raise ValueError(f"{prefix}_CERT and {prefix}_KEY must be set together")
    if ca is None:
        if cert is not None:
            raise ValueError(f"{prefix}_CERT and {prefix}_KEY need {prefix}_CA")
        return None
    return ClientTls(ca=ca, cert=cert, key=key)
