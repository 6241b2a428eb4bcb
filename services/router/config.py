"""The router's settings, read once from the environment at start (SPEC 5).

    variable                         default                          meaning
    ROUTER_LISTEN                    127.0.0.1:50052                  gRPC listen address
    ROUTER_VAULT_ADDR                127.0.0.1:50051                  the vault (all its addresses)
    ROUTER_VAULT_TOKEN_FILE          $STATE_DIR/router-vault.token    its token at the vault
    ROUTER_CALLERS_FILE              $STATE_DIR/router-callers.json   who may call (right `invoke`)
    ROUTER_TLS_CERT, ROUTER_TLS_KEY  unset: plaintext                 server TLS
    ROUTER_TLS_CLIENT_CA             unset                            require client certs (mTLS)
    ROUTER_VAULT_TLS_CA              unset: plaintext                 TLS to the vault, this CA
    ROUTER_VAULT_TLS_CERT, _KEY      unset                            client cert for mTLS to vault
    ROUTER_UPSTREAM_CA_FILE          unset: public CAs                trust only this upstream CA
    ROUTER_EGRESS_ALLOW              empty                            host[:port] or CIDR, commas
    ROUTER_CONNECT_TIMEOUT           10                               s to connect upstream
    ROUTER_RESOLVE_TIMEOUT           5                                s to resolve an upstream name
    ROUTER_UPSTREAM_FIRST_BYTE_TIMEOUT 300                            s from request to answer head
    ROUTER_UPSTREAM_IDLE_TIMEOUT     120                              s without a byte of the body
    ROUTER_UPSTREAM_TIMEOUT          600                              s per call without a deadline
    ROUTER_VAULT_TIMEOUT             5                                s for the vault's Resolve
    ROUTER_MAX_CONNECTIONS           1000                             open upstream connections
    ROUTER_MAX_CONNECTIONS_PER_ORIGIN 100                             of them to one origin
    ROUTER_MAX_HEADER_VALUE_BYTES    32768                            one substituted header value
    ROUTER_MAX_HEADERS_BYTES         65536                            all upstream header lines
    ROUTER_SHUTDOWN_GRACE            10                               s calls may finish on SIGTERM
    ROUTER_LOG_LEVEL                 INFO                             log level
    ROUTER_METRICS_LISTEN            unset: no metrics endpoint       host:port of GET /metrics

Why these bounds (docs/configuration.md says more): upstream time is bounded apart from the
caller's deadline so that a silent upstream gives up its connection and its call long before a
600 s deadline. The first-byte bound is long because a non-streamed completion of a reasoning
model sends its head only when it has finished (minutes); the idle bound is above the 100 s for
which Cloudflare, in front of most LLM APIs, lets an origin stay silent. A name that does not
resolve in 5 s (glibc's own per-try timeout) is UNAVAILABLE; lookups run on a few threads of
their own, one at a time per name, so a resolver that never answers cannot take the threads
other names need. The per-origin limit keeps one slow origin from holding every pooled
connection (raise it for a replica that serves many users of one big provider). The header
bounds are what common edges accept (`services.common.header_bounds`): a 16 KiB credential in
a 16 KiB template fits one value.

Unsafe in production: plaintext gRPC (no `ROUTER_TLS_*`, no `ROUTER_VAULT_TLS_CA`), and any
egress allowlist entry for an internal network. The metrics endpoint is plain HTTP without
authentication: off unless set, and then for the scraper's network only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from services.common.grpc_server import ClientTls, TlsFiles
from services.common.header_bounds import (
    DEFAULT_MAX_HEADER_VALUE_BYTES,
    DEFAULT_MAX_HEADERS_BYTES,
    HeaderBounds,
)
from services.common.settings import (
    env_client_tls,
    env_float,
    env_int,
    env_metrics_listen,
    env_optional_path,
    env_path,
    env_str,
    state_dir,
)
from services.common.tracing_setup import TracingSettings
from services.router.egress import EgressPolicy


def _seconds(environ: Mapping[str, str], name: str, default: float) -> float:
    """A positive number of seconds from `name`, else `default`."""
    value = env_float(environ, name, default)
    if value <= 0:
        raise ValueError(f"{name} must be a positive number of seconds")
    return value


def _count(environ: Mapping[str, str], name: str, default: int, smallest: int = 1) -> int:
    """An integer of at least `smallest` from `name`, else `default`."""
    value = env_int(environ, name, default)
    if value < smallest:
        raise ValueError(f"{name} must be at least {smallest}")
    return value


#: Below this a provider could not carry one API key (an operator's typo, such as a value in KiB).
_SMALLEST_HEADER_BOUND = 1024


@dataclass(frozen=True)
class RouterSettings:
    """Everything the router is configured with (the table above has the variables).

    Abuse bounds (issue 14; docs/configuration.md says why each default):
        resolve_timeout: s to resolve an upstream name (5: glibc's own per-try timeout);
            after it UNAVAILABLE.
        first_byte_timeout: s from sending a request to its answer's first bytes, and the
            longest wait for a pooled connection (300: a non-streamed reasoning-model
            completion sends its head only when done); after it DEADLINE_EXCEEDED.
        idle_timeout: s of silence in the middle of a body (120: above Cloudflare's 100 s
            origin timeout); after it DEADLINE_EXCEEDED.
        max_connections_per_origin: upstream connections to one origin (100), so one slow
            origin cannot hold the whole pool.
        max_header_value_bytes, max_headers_bytes: one substituted header value (32 KiB) and
            all lines of a request (64 KiB), as `services.common.header_bounds` chooses them.
    """

    listen: str = "127.0.0.1:50052"
    vault_addr: str = "127.0.0.1:50051"
    vault_token_file: Path = Path(".state/router-vault.token")
    callers_file: Path = Path(".state/router-callers.json")
    tls: TlsFiles | None = None
    vault_tls: ClientTls | None = None
    upstream_ca_file: Path | None = None
    egress_allow: str = ""
    connect_timeout: float = 10.0
    resolve_timeout: float = 5.0
    first_byte_timeout: float = 300.0
    idle_timeout: float = 120.0
    upstream_timeout: float = 600.0
    vault_timeout: float = 5.0
    max_connections: int = 1000
    max_connections_per_origin: int = 100
    max_header_value_bytes: int = DEFAULT_MAX_HEADER_VALUE_BYTES
    max_headers_bytes: int = DEFAULT_MAX_HEADERS_BYTES
    shutdown_grace: float = 10.0
    log_level: str = "INFO"
    metrics_listen: str | None = None
    # Traces over OTLP when OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT is set (tracing_setup).
    tracing: TracingSettings = TracingSettings()

    @property
    def egress_policy(self) -> EgressPolicy:
        return EgressPolicy.from_setting(self.egress_allow)

    @property
    def header_bounds(self) -> HeaderBounds:
        return HeaderBounds(self.max_header_value_bytes, self.max_headers_bytes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> RouterSettings:
        """Read `ROUTER_*` (and `STATE_DIR`); ValueError naming the variable when one is bad."""
        state = state_dir(environ)
        cert = env_optional_path(environ, "ROUTER_TLS_CERT")
        key = env_optional_path(environ, "ROUTER_TLS_KEY")
        client_ca = env_optional_path(environ, "ROUTER_TLS_CLIENT_CA")
        if (cert is None) != (key is None):
            raise ValueError("ROUTER_TLS_CERT and ROUTER_TLS_KEY must be set together")
        if client_ca is not None and cert is None:
            raise ValueError("ROUTER_TLS_CLIENT_CA needs ROUTER_TLS_CERT and ROUTER_TLS_KEY")
        tls = TlsFiles(cert, key, client_ca) if cert is not None and key is not None else None

        egress_allow = env_str(environ, "ROUTER_EGRESS_ALLOW", "")
        EgressPolicy.from_setting(egress_allow)  # fail at start, not on the first call
        return cls(
            listen=env_str(environ, "ROUTER_LISTEN", cls.listen),
            vault_addr=env_str(environ, "ROUTER_VAULT_ADDR", cls.vault_addr),
            vault_token_file=env_path(
                environ, "ROUTER_VAULT_TOKEN_FILE", state / "router-vault.token"
            ),
            callers_file=env_path(environ, "ROUTER_CALLERS_FILE", state / "router-callers.json"),
            tls=tls,
            vault_tls=env_client_tls(environ, "ROUTER_VAULT_TLS"),
            upstream_ca_file=env_optional_path(environ, "ROUTER_UPSTREAM_CA_FILE"),
            egress_allow=egress_allow,
            connect_timeout=_seconds(environ, "ROUTER_CONNECT_TIMEOUT", cls.connect_timeout),
            resolve_timeout=_seconds(environ, "ROUTER_RESOLVE_TIMEOUT", cls.resolve_timeout),
            first_byte_timeout=_seconds(
                environ, "ROUTER_UPSTREAM_FIRST_BYTE_TIMEOUT", cls.first_byte_timeout
            ),
            idle_timeout=_seconds(environ, "ROUTER_UPSTREAM_IDLE_TIMEOUT", cls.idle_timeout),
            upstream_timeout=_seconds(environ, "ROUTER_UPSTREAM_TIMEOUT", cls.upstream_timeout),
            vault_timeout=_seconds(environ, "ROUTER_VAULT_TIMEOUT", cls.vault_timeout),
            max_connections=_count(environ, "ROUTER_MAX_CONNECTIONS", cls.max_connections),
            max_connections_per_origin=_count(
                environ, "ROUTER_MAX_CONNECTIONS_PER_ORIGIN", cls.max_connections_per_origin
            ),
            max_header_value_bytes=_count(
                environ,
                "ROUTER_MAX_HEADER_VALUE_BYTES",
                cls.max_header_value_bytes,
                _SMALLEST_HEADER_BOUND,
            ),
            max_headers_bytes=_count(
                environ, "ROUTER_MAX_HEADERS_BYTES", cls.max_headers_bytes, _SMALLEST_HEADER_BOUND
            ),
            shutdown_grace=env_float(environ, "ROUTER_SHUTDOWN_GRACE", cls.shutdown_grace),
            log_level=env_str(environ, "ROUTER_LOG_LEVEL", cls.log_level).upper(),
            metrics_listen=env_metrics_listen(environ, "ROUTER_METRICS_LISTEN"),
            tracing=TracingSettings.from_env(environ, "aicreds-router"),
        )
