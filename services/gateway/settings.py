"""The gateway's configuration: one frozen object read from the environment at start."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from services.common.grpc_server import ClientTls
from services.common.settings import (
    env_bool,
    env_client_tls,
    env_float,
    env_int,
    env_optional,
    env_path,
    env_str,
    split_listen,
    state_dir,
)
from services.common.tracing_setup import TracingSettings
from services.gateway.redis_url import RedisUrl, parse_redis_url

MIB = 1024 * 1024
_REDIS_PREFIX_RE = re.compile(r"[A-Za-z0-9._:-]{1,64}")
#: The gRPC channels carry messages of up to 64 MiB; the rest of an InvokeRequest needs room.
LLM_MAX_BODY_CAP = 63 * MIB


@dataclass(frozen=True)
class GatewaySettings:
    """Everything the gateway reads from `GATEWAY_*` variables (and `STATE_DIR`)."""

    listen: str = "127.0.0.1:8080"
    vault_addr: str = "127.0.0.1:50051"
    router_addr: str = "127.0.0.1:50052"
    vault_token_file: Path = Path(".state/gateway-vault.token")
    router_token_file: Path = Path(".state/gateway-router.token")
    vault_tls: ClientTls | None = None
    router_tls: ClientTls | None = None
    # The one Origin allowed on cookie-authenticated state-changing requests (CSRF defence).
    origin: str = "http://127.0.0.1:8080"
    cookie_secure: bool = True
    # Requested session lifetime in seconds (the vault caps it by the token's expiry).
    session_ttl: int = 12 * 3600
    # How long an Authenticate answer is reused: the upper bound on how late a revocation bites.
    auth_cache_ttl: float = 5.0
    # Per API token: requests per second and burst.
    rate_limit: float = 20.0
    rate_burst: int = 40
    # Per user, over all their tokens and sessions (minting tokens must not multiply the
    # rate): twice a token's, so that two busy clients of one user do not starve each other.
    user_rate_limit: float = 40.0
    user_rate_burst: int = 80
    # Model calls in flight per user (a stream holds its slot until it ends): enough for an
    # agent's parallel calls, few enough that one user cannot hold every connection.
    user_max_concurrent_calls: int = 20
    # Failed authentications per client address (IPv6 per /64): only failing requests are
    # throttled (429 instead of 401), so a valid credential is never refused for them.
    auth_fail_rate: float = 1.0
    auth_fail_burst: int = 10
    # Redis shared by every replica (unset: none): the rate-limit buckets live there, and the
    # revocation feed publishes and follows `revocation_channel` there, so a revocation on any
    # replica bites on all within a second (without Redis, or while it is down, each replica
    # keeps its own buckets and other replicas wait for the TTL).
    redis_url: RedisUrl | None = None
    # The start of every key this gateway writes there: deployments sharing a Redis differ.
    redis_prefix: str = "aicreds"
    # Proxies whose X-Forwarded-For/-Proto uvicorn believes (comma-separated IPs or CIDRs,
    # `*` for any): without it, behind a load balancer every client has the balancer's address.
    forwarded_allow_ips: str = "127.0.0.1"
    vault_timeout: float = 5.0
    router_timeout: float = 300.0
    # Largest request body: REST v2 (SPEC 2.2), and the model endpoints under /v1, whose
    # bodies (long conversations, images as base64) are far larger.
    max_body: int = MIB
    llm_max_body: int = 32 * MIB
    log_level: str = "INFO"
    revocation_channel: str = "aicreds:revocations"
    # Traces over OTLP when OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT is set (tracing_setup).
    tracing: TracingSettings = TracingSettings()

    @property
    def listen_host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def listen_port(self) -> int:
        return split_listen(self.listen)[1]

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> GatewaySettings:
        """Read the settings; raise ValueError naming the first bad variable."""
        state = state_dir(environ)
        settings = cls(
            listen=env_str(environ, "GATEWAY_LISTEN", cls.listen),
            vault_addr=env_str(environ, "GATEWAY_VAULT_ADDR", cls.vault_addr),
            router_addr=env_str(environ, "GATEWAY_ROUTER_ADDR", cls.router_addr),
            vault_token_file=env_path(
                environ, "GATEWAY_VAULT_TOKEN_FILE", state / "gateway-vault.token"
            ),
            router_token_file=env_path(
                environ, "GATEWAY_ROUTER_TOKEN_FILE", state / "gateway-router.token"
            ),
            vault_tls=env_client_tls(environ, "GATEWAY_VAULT_TLS"),
            router_tls=env_client_tls(environ, "GATEWAY_ROUTER_TLS"),
            origin=env_str(environ, "GATEWAY_ORIGIN", cls.origin).rstrip("/"),
            cookie_secure=env_bool(environ, "GATEWAY_COOKIE_SECURE", cls.cookie_secure),
            session_ttl=env_int(environ, "GATEWAY_SESSION_TTL", cls.session_ttl),
            auth_cache_ttl=env_float(environ, "GATEWAY_AUTH_CACHE_TTL", cls.auth_cache_ttl),
            rate_limit=env_float(environ, "GATEWAY_RATE_LIMIT", cls.rate_limit),
            rate_burst=env_int(environ, "GATEWAY_RATE_BURST", cls.rate_burst),
            user_rate_limit=env_float(environ, "GATEWAY_USER_RATE_LIMIT", cls.user_rate_limit),
            user_rate_burst=env_int(environ, "GATEWAY_USER_RATE_BURST", cls.user_rate_burst),
            user_max_concurrent_calls=env_int(
                environ, "GATEWAY_USER_MAX_CONCURRENT_CALLS", cls.user_max_concurrent_calls
            ),
            forwarded_allow_ips=env_str(
                environ, "GATEWAY_FORWARDED_ALLOW_IPS", cls.forwarded_allow_ips
            ),
            auth_fail_rate=env_float(environ, "GATEWAY_AUTH_FAIL_RATE", cls.auth_fail_rate),
            auth_fail_burst=env_int(environ, "GATEWAY_AUTH_FAIL_BURST", cls.auth_fail_burst),
            redis_url=parse_redis_url(env_optional(environ, "GATEWAY_REDIS_URL")),
            redis_prefix=env_str(environ, "GATEWAY_REDIS_PREFIX", cls.redis_prefix),
            vault_timeout=env_float(environ, "GATEWAY_VAULT_TIMEOUT", cls.vault_timeout),
            router_timeout=env_float(environ, "GATEWAY_ROUTER_TIMEOUT", cls.router_timeout),
            max_body=env_int(environ, "GATEWAY_MAX_BODY", cls.max_body),
            llm_max_body=env_int(environ, "GATEWAY_LLM_MAX_BODY", cls.llm_max_body),
            log_level=env_str(environ, "GATEWAY_LOG_LEVEL", cls.log_level),
            revocation_channel=env_str(
                environ, "GATEWAY_REVOCATION_CHANNEL", cls.revocation_channel
            ),
            tracing=TracingSettings.from_env(environ, "aicreds-gateway"),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        """Refuse values that cannot work, naming the variable."""
        try:
            split_listen(self.listen)
        except ValueError:
            raise ValueError("GATEWAY_LISTEN must be host:port") from None
        positive = {
            "GATEWAY_AUTH_CACHE_TTL": self.auth_cache_ttl >= 0,
            "GATEWAY_RATE_LIMIT": self.rate_limit > 0,
            "GATEWAY_RATE_BURST": self.rate_burst >= 1,
            "GATEWAY_USER_RATE_LIMIT": self.user_rate_limit > 0,
            "GATEWAY_USER_RATE_BURST": self.user_rate_burst >= 1,
            "GATEWAY_USER_MAX_CONCURRENT_CALLS": self.user_max_concurrent_calls >= 1,
            "GATEWAY_AUTH_FAIL_RATE": self.auth_fail_rate > 0,
            "GATEWAY_AUTH_FAIL_BURST": self.auth_fail_burst >= 1,
            "GATEWAY_VAULT_TIMEOUT": self.vault_timeout > 0,
            "GATEWAY_ROUTER_TIMEOUT": self.router_timeout > 0,
            "GATEWAY_MAX_BODY": self.max_body >= 1,
            # A model call's body travels to the router in one gRPC message (64 MiB at most).
            "GATEWAY_LLM_MAX_BODY": 1 <= self.llm_max_body <= LLM_MAX_BODY_CAP,
            "GATEWAY_SESSION_TTL": self.session_ttl >= 0,
            "GATEWAY_REDIS_PREFIX": _REDIS_PREFIX_RE.fullmatch(self.redis_prefix) is not None,
        }
        for name, ok in positive.items():
            if not ok:
                raise ValueError(f"{name} is out of range")
        if not self.revocation_channel:
            raise ValueError("GATEWAY_REVOCATION_CHANNEL must not be empty")
        if not self.origin.startswith(("http://", "https://")):
            raise ValueError("GATEWAY_ORIGIN must be an http(s) origin, e.g. https://example.com")
