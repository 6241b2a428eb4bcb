"""Run a real vault for tests: in process on 127.0.0.1:0, or as files for a subprocess.

    async with running_vault(tmp_path, callers={"gateway": ["manage"], "router": ["resolve"]}) as v:
        channel = v.channel("router")             # authenticated as `router`, closed on exit
        stub = CredentialServiceStub(channel)
        ...                                       # v.address == "127.0.0.1:PORT"

For a vault in another process, `prepare_vault_files(directory, callers)` writes the keyring
and callers files and returns `VaultFiles` with the tokens and the environment to run
`python -m services.vault.server` with (set `VAULT_LISTEN` yourself).

The database is SQLite in the state directory, unless the test runs on PostgreSQL
(`use_backend("postgresql")`, which the `vault_backend` fixture of tests/vault does): then each
state directory gets a fresh database of its own on the test server, dropped after the test.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import grpc.aio

from services.common.callers import write_callers_file, write_private_file
from services.common.grpc_server import open_channel
from services.common.tracing_setup import TracingSettings
from services.vault.config import VaultSettings
from services.vault.keyring import Keyring
from services.vault.server import RunningVault, start_vault
from services.vault.store.location import DatabaseLocation, PostgresUrl
from tests.support.postgres import create_database, drop_database

DEFAULT_CALLERS: Mapping[str, Iterable[str]] = {
    "gateway": ["manage"],
    "router": ["resolve"],
}


@dataclass(frozen=True)
class VaultFiles:
    """A vault's state directory with its keyring and callers files."""

    state_dir: Path
    keyring_file: Path
    callers_file: Path
    database: DatabaseLocation
    tokens: Mapping[str, str] = field(repr=False)

    def token(self, caller: str) -> str:
        """The plaintext service token of a caller."""
        return self.tokens[caller]

    def env(self, listen: str = "127.0.0.1:0") -> dict[str, str]:
        """`VAULT_*` variables for a vault using these files."""
        return {
            "STATE_DIR": str(self.state_dir),
            "VAULT_LISTEN": listen,
            "VAULT_DATABASE": database_setting(self.database),
            "VAULT_KEYRING_FILE": str(self.keyring_file),
            "VAULT_CALLERS_FILE": str(self.callers_file),
            "VAULT_LOG_LEVEL": "DEBUG",
        }


def prepare_vault_files(
    directory: Path,
    callers: Mapping[str, Iterable[str]] = DEFAULT_CALLERS,
    *,
    keyring: Keyring | None = None,
) -> VaultFiles:
    """Write a keyring (fresh unless given) and a callers file with fresh tokens (mode 0600)."""
    state = directory / "vault-state"
    state.mkdir(parents=True, exist_ok=True)
    keyring_file = state / "master-keys.json"
    if keyring is not None or not keyring_file.exists():
        write_private_file(keyring_file, (keyring or Keyring.generate()).to_json())
    tokens = {name: "svc-test-" + secrets.token_urlsafe(24) for name in callers}
    callers_file = state / "vault-callers.json"
    write_callers_file(
        callers_file, {name: (tokens[name], list(rights)) for name, rights in callers.items()}
    )
    return VaultFiles(state, keyring_file, callers_file, database_for(state), tokens)


_backend = "sqlite"
_databases: dict[Path, PostgresUrl] = {}


def use_backend(backend: str) -> None:
    """The backend of the vaults started from now on: "sqlite" or "postgresql"."""
    if backend not in {"sqlite", "postgresql"}:
        raise ValueError(backend)
    global _backend
    _backend = backend


def current_backend() -> str:
    return _backend


def database_for(state: Path) -> DatabaseLocation:
    """The database of the vault whose state directory is `state`, on the current backend (a
    PostgreSQL database is created on first use and kept for the directory: a restart)."""
    if _backend == "sqlite":
        return state / "vault.db"
    if state not in _databases:
        _databases[state] = create_database(state.parent.name)
    return _databases[state]


def drop_test_databases() -> None:
    """Drop the PostgreSQL databases made for this test's vaults."""
    while _databases:
        _, url = _databases.popitem()
        drop_database(url)


def database_setting(location: DatabaseLocation) -> str:
    """`VAULT_DATABASE` for a location (a PostgreSQL URL in full: test URLs hold no password)."""
    return location.url if isinstance(location, PostgresUrl) else str(location)


@dataclass
class VaultHandle:
    """A vault running in this process for one test."""

    running: RunningVault
    files: VaultFiles
    _channels: list[grpc.aio.Channel] = field(default_factory=list, repr=False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.running.port}"

    @property
    def settings(self) -> VaultSettings:
        return self.running.settings

    @property
    def callers_file(self) -> Path:
        return self.files.callers_file

    @property
    def keyring_file(self) -> Path:
        return self.files.keyring_file

    def token(self, caller: str) -> str:
        """The plaintext service token of a caller."""
        return self.files.token(caller)

    def channel(self, caller: str | None) -> grpc.aio.Channel:
        """A channel authenticated as `caller` (None: no caller token); closed on exit."""
        if caller is None:
            channel = grpc.aio.insecure_channel(self.address)
        else:
            channel = open_channel(self.address, self.token(caller))
        self._channels.append(channel)
        return channel


@asynccontextmanager
async def running_vault(
    tmp_path: Path,
    callers: Mapping[str, Iterable[str]] = DEFAULT_CALLERS,
    *,
    keyring: Keyring | None = None,
    env: Mapping[str, str] | None = None,
    tracing: TracingSettings | None = None,
) -> AsyncIterator[VaultHandle]:
    """Start a real vault on 127.0.0.1:0 with its state under `tmp_path`; stop it on exit
    (`tracing`: where it sends spans; none by default).

    `callers` maps caller name -> rights (`manage`, `resolve`, `admin`); each gets a fresh
    token (`handle.token(name)`). Entering twice with the same `tmp_path` reuses the database
    and keyring (a restart), with fresh caller tokens. `env` adds or replaces `VAULT_*`
    variables (e.g. `VAULT_METRICS_LISTEN`).
    """
    files = prepare_vault_files(tmp_path, callers, keyring=keyring)
    settings = VaultSettings.from_env({**files.env(), **(env or {})})
    if tracing is not None:
        settings = replace(settings, tracing=tracing)
    handle = VaultHandle(await start_vault(settings), files)
    try:
        yield handle
    finally:
        for channel in handle._channels:
            await channel.close()
        await handle.running.stop(0)
