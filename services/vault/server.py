"""The vault process: wiring of keyring, store, domain and servicers; `aicreds-vault`.

`start_vault(settings)` is used by `main` and by tests alike: it refuses bad configuration with
`StartupRefused`, opens and migrates the database, verifies the master keys against it and starts
the gRPC server (health, reflection, caller auth, access log, optional TLS) and, with
`VAULT_METRICS_LISTEN`, its Prometheus endpoint (`metrics.py`).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

import grpc.aio
import uvloop
from aicreds.vault.v1 import (
    audit_pb2_grpc,
    auth_pb2_grpc,
    credentials_pb2,
    providers_pb2,
    usage_pb2_grpc,
)

from services.common.callers import CallerRegistry
from services.common.grpc_handlers import build_interceptors
from services.common.grpc_server import RunningServer, run_until_signal, start_server
from services.common.logging import configure_logging
from services.common.metrics import MetricsExport, RpcMetrics
from services.common.startup_heap import freeze_startup_heap
from services.common.tracing_setup import Tracing, start_tracing
from services.vault.auth import AuthDomain
from services.vault.bulk_reads import BulkReads
from services.vault.config import VaultSettings
from services.vault.credential_hosts import CredentialHosts
from services.vault.credentials import CredentialMaps
from services.vault.envelope import Envelope
from services.vault.errors import StartupRefused
from services.vault.keyring import KeyringSource, load_or_generate
from services.vault.metrics import vault_registry
from services.vault.providers import ProviderBook
from services.vault.resealing import seal_legacy_rows
from services.vault.resolve import Resolver
from services.vault.rights import (
    AUDIT_SERVICE,
    AUTH_SERVICE,
    CREDENTIAL_SERVICE,
    PROVIDER_SERVICE,
    REQUIRED_RIGHTS,
    USAGE_SERVICE,
)
from services.vault.servicers.audit import AuditServicer
from services.vault.servicers.auth import AuthServicer
from services.vault.servicers.credentials import CredentialServicer
from services.vault.servicers.providers import ProviderServicer
from services.vault.servicers.serialized import add_service
from services.vault.servicers.usage import UsageServicer
from services.vault.store.credential_hosts import SqlCredentialHostStore
from services.vault.store.usage import SqlUsageStore
from services.vault.store.vault_tables import SqlVaultStore
from services.vault.usage import UsageBook

_log = logging.getLogger("aicreds.vault")
_SWITCH_INTERVAL_S = 0.0005


@dataclass
class RunningVault:
    """A started vault: its server, its store and its domain objects."""

    settings: VaultSettings
    server: RunningServer
    store: SqlVaultStore
    envelope: Envelope
    credentials: CredentialMaps
    providers: ProviderBook
    tracing: Tracing

    @property
    def port(self) -> int:
        return self.server.port

    async def stop(self, grace: float = 5.0) -> None:
        """Drain (health NOT_SERVING), stop serving, then close the database."""
        try:
            await self.server.stop(grace)
        finally:
            await self.store.close()
            await self.tracing.shutdown()


def load_callers(settings: VaultSettings) -> CallerRegistry:
    try:
        return CallerRegistry.load(settings.callers_file)
    except ValueError as err:
        raise StartupRefused(
            f"{err} (VAULT_CALLERS_FILE: a JSON file of callers with token digests and rights)"
        ) from None


def register_services(
    server: grpc.aio.Server,
    on_drain: list[Callable[[], None]],
    credentials: CredentialMaps,
    providers: ProviderBook,
    resolver: Resolver,
    auth: AuthDomain,
    credential_hosts: CredentialHosts,
    usage: UsageBook,
) -> None:
    # Both may answer responses serialized off the event loop (`servicers.serialized`).
    credential_servicer = CredentialServicer(credentials, resolver, credential_hosts)
    add_service(server, credentials_pb2.DESCRIPTOR, "CredentialService", credential_servicer)
    on_drain.append(credential_servicer.drain)
    add_service(server, providers_pb2.DESCRIPTOR, "ProviderService", ProviderServicer(providers))
    auth_pb2_grpc.add_AuthServiceServicer_to_server(
        AuthServicer(auth.tokens, auth.sessions), server
    )
    audit_pb2_grpc.add_AuditServiceServicer_to_server(AuditServicer(auth.audit_log), server)
    usage_pb2_grpc.add_UsageServiceServicer_to_server(UsageServicer(usage), server)


async def start_vault(settings: VaultSettings) -> RunningVault:
    """Start a vault as configured; StartupRefused says what to fix."""
    callers = load_callers(settings)
    keyring = KeyringSource(
        settings.keyring_file,
        load_or_generate(settings.keyring_file, generate_dev_key=settings.generate_dev_key),
    )
    store = SqlVaultStore(await settings.open_database(), settings.limits)
    tracing = start_tracing(settings.tracing)
    try:
        envelope = Envelope(store, keyring)
        await envelope.verify_master_keys()
        bulk = BulkReads()  # one per vault: a user's large reads, of any kind, one at a time
        credentials = CredentialMaps(store, envelope, bulk)
        providers = ProviderBook(store, envelope, bulk=bulk)
        resolver = Resolver(credentials, providers, store)
        auth = AuthDomain.on(store.db, keyring)
        # Migration 6 needs the keyring to finish: done here, before anything is served.
        await seal_legacy_rows(auth.store, envelope)
        credential_hosts = CredentialHosts(SqlCredentialHostStore(store.db), envelope)
        usage = UsageBook(SqlUsageStore(store.db))
        # RPC metrics only when exported: otherwise no call pays for them.
        registry = vault_registry(keyring) if settings.metrics_listen else None
        on_drain: list[Callable[[], None]] = []  # what ends the long-lived streams
        server = await start_server(
            listen=settings.listen,
            register=lambda s: register_services(
                s, on_drain, credentials, providers, resolver, auth, credential_hosts, usage
            ),
            service_names=[
                CREDENTIAL_SERVICE,
                PROVIDER_SERVICE,
                AUTH_SERVICE,
                AUDIT_SERVICE,
                USAGE_SERVICE,
            ],
            interceptors=build_interceptors(
                service="vault",
                callers=callers,
                required_rights=REQUIRED_RIGHTS,
                metrics=RpcMetrics("vault", registry) if registry is not None else None,
                tracer=tracing.tracer,
            ),
            tls=settings.tls,
            metrics=(
                MetricsExport(settings.metrics_listen, registry)
                if settings.metrics_listen and registry is not None
                else None
            ),
        )
    except BaseException:
        await store.close()
        await tracing.shutdown()
        raise
    server.on_drain.extend(on_drain)
    _log.info(
        "vault serving",
        extra={
            "fields": {
                "listen": settings.listen,
                "port": server.port,
                "database": str(settings.database),
                "tls": settings.tls is not None,
                "master_keys": keyring.current.key_ids,
                "primary_master_key": keyring.current.primary_id,
                "metrics_port": server.metrics.port if server.metrics else None,
            }
        },
    )
    return RunningVault(settings, server, store, envelope, credentials, providers, tracing)


async def serve(settings: VaultSettings) -> None:
    running = await start_vault(settings)
    freeze_startup_heap()
    try:
        await run_until_signal(running.server)
    finally:
        await running.store.close()
        await running.tracing.shutdown()


def main() -> None:
    """`aicreds-vault`: run the vault until SIGTERM/SIGINT."""
    try:
        settings = VaultSettings.from_env(os.environ)
    except ValueError as err:
        sys.exit(f"aicreds-vault: {err}")
    configure_logging("vault", settings.log_level)
    # A user's large reads run on worker threads (`bulk_reads`) that share the interpreter lock
    # with the event loop; the default 5 ms before a thread must hand it over would add up to
    # 5 ms to every other request's steps meanwhile. 0.5 ms keeps the loop's waits short.
    sys.setswitchinterval(_SWITCH_INTERVAL_S)
    try:
        uvloop.run(serve(settings))
    except StartupRefused as err:
        _log.critical("vault refused to start", extra={"fields": {"problem": str(err)}})
        sys.exit(f"aicreds-vault: refusing to start: {err}")
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
