"""The vault's settings, read once from the environment at start (SPEC 5)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from services.common.settings import (
    env_bool,
    env_int,
    env_metrics_listen,
    env_optional_path,
    env_path,
    env_str,
    state_dir,
)
from services.common.tracing_setup import TracingSettings
from services.vault.store.database import Database
from services.vault.store.location import DatabaseLocation, parse_location
from services.vault.store.opening import open_database
from services.vault.store.sqlite_checkpoints import (
    DEFAULT_SYNC_INTERVAL_MS,
    MAX_SYNC_INTERVAL_MS,
)
from services.vault.user_limits import (
    DEFAULT_MAX_CREDENTIAL_BYTES,
    DEFAULT_MAX_PROVIDER_BYTES,
    DEFAULT_MAX_PROVIDERS,
    UserLimits,
)

if TYPE_CHECKING:
    from services.common.grpc_server import TlsFiles


@dataclass(frozen=True)
class VaultSettings:
    """Everything the vault reads from `VAULT_*` variables (and the shared `STATE_DIR`)."""

    listen: str
    state_dir: Path
    database: DatabaseLocation
    keyring_file: Path
    generate_dev_key: bool
    callers_file: Path
    tls_cert: Path | None
    tls_key: Path | None
    tls_client_ca: Path | None
    log_level: str
    limits: UserLimits = UserLimits()
    database_pool_size: int = 10
    database_statement_timeout_ms: int = 5000
    audit_sync_interval_ms: int = DEFAULT_SYNC_INTERVAL_MS
    """SQLite: the most time between an audit row's commit and its WAL's sync to disk
    (`VAULT_AUDIT_SYNC_INTERVAL_MS`, 1 to 60,000; see `store/sqlite_checkpoints`)."""
    metrics_listen: str | None = None
    """`host:port` of the Prometheus endpoint (`VAULT_METRICS_LISTEN`); None: no endpoint."""
    # Traces over OTLP when OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT is set (tracing_setup).
    tracing: TracingSettings = TracingSettings()

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> VaultSettings:
        """Build from environment variables; ValueError names a bad variable."""
        state = state_dir(environ)
        settings = cls(
            listen=env_str(environ, "VAULT_LISTEN", "127.0.0.1:50051"),
            state_dir=state,
            database=parse_location(env_str(environ, "VAULT_DATABASE", str(state / "vault.db"))),
            keyring_file=env_path(environ, "VAULT_KEYRING_FILE", state / "master-keys.json"),
            generate_dev_key=env_bool(environ, "VAULT_GENERATE_DEV_KEY", False),
            callers_file=env_path(environ, "VAULT_CALLERS_FILE", state / "vault-callers.json"),
            tls_cert=env_optional_path(environ, "VAULT_TLS_CERT"),
            tls_key=env_optional_path(environ, "VAULT_TLS_KEY"),
            tls_client_ca=env_optional_path(environ, "VAULT_TLS_CLIENT_CA"),
            log_level=env_str(environ, "VAULT_LOG_LEVEL", "INFO").upper(),
            limits=UserLimits(
                max_providers=env_int(environ, "VAULT_MAX_PROVIDERS", DEFAULT_MAX_PROVIDERS),
                max_provider_bytes=env_int(
                    environ, "VAULT_MAX_PROVIDER_BYTES", DEFAULT_MAX_PROVIDER_BYTES
                ),
                max_credential_bytes=env_int(
                    environ, "VAULT_MAX_CREDENTIAL_BYTES", DEFAULT_MAX_CREDENTIAL_BYTES
                ),
            ),
            database_pool_size=env_int(environ, "VAULT_DATABASE_POOL_SIZE", 10),
            database_statement_timeout_ms=env_int(
                environ, "VAULT_DATABASE_STATEMENT_TIMEOUT_MS", 5000
            ),
            audit_sync_interval_ms=env_int(
                environ, "VAULT_AUDIT_SYNC_INTERVAL_MS", DEFAULT_SYNC_INTERVAL_MS
            ),
            metrics_listen=env_metrics_listen(environ, "VAULT_METRICS_LISTEN"),
            tracing=TracingSettings.from_env(environ, "aicreds-vault"),
        )
        if (settings.tls_cert is None) != (settings.tls_key is None):
            raise ValueError("VAULT_TLS_CERT and VAULT_TLS_KEY must be set together")
        if settings.tls_client_ca is not None and settings.tls_cert is None:
            raise ValueError("VAULT_TLS_CLIENT_CA needs VAULT_TLS_CERT and VAULT_TLS_KEY")
        for name, value in (
            ("VAULT_MAX_PROVIDERS", settings.limits.max_providers),
            ("VAULT_MAX_PROVIDER_BYTES", settings.limits.max_provider_bytes),
            ("VAULT_MAX_CREDENTIAL_BYTES", settings.limits.max_credential_bytes),
            ("VAULT_DATABASE_POOL_SIZE", settings.database_pool_size),
            ("VAULT_DATABASE_STATEMENT_TIMEOUT_MS", settings.database_statement_timeout_ms),
        ):
            if value < 1:
                raise ValueError(f"{name} must be a positive integer")
        if not 1 <= settings.audit_sync_interval_ms <= MAX_SYNC_INTERVAL_MS:
            raise ValueError(
                f"VAULT_AUDIT_SYNC_INTERVAL_MS must be from 1 to {MAX_SYNC_INTERVAL_MS}"
                " (milliseconds)"
            )
        if settings.log_level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("VAULT_LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return settings

    async def open_database(self, *, readers: int = 3) -> Database:
        """The database `VAULT_DATABASE` names, opened and migrated with the pool size,
        statement timeout and audit sync interval set (StartupRefused says what to fix)."""
        return await open_database(
            self.database,
            readers=readers,
            pool_size=self.database_pool_size,
            statement_timeout_ms=self.database_statement_timeout_ms,
            audit_sync_interval_ms=self.audit_sync_interval_ms,
        )

    @property
    def tls(self) -> TlsFiles | None:
        """Server TLS files, when configured (a client CA turns on mutual TLS)."""
        # Imported here: `aicreds-admin` reads these settings and has no use for grpc, whose
        # import is a quarter of its start-up time (and it runs once per command).
        from services.common.grpc_server import TlsFiles

        if self.tls_cert is None or self.tls_key is None:
            return None
        return TlsFiles(cert=self.tls_cert, key=self.tls_key, client_ca=self.tls_client_ca)
