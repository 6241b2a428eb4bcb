"""Several vault processes on one database, as a deployment with replicas runs them.

    files = prepare_vault_files(tmp_path)              # one keyring, one callers file, one DB
    async with running_replicas(files, tmp_path, 3) as replicas:
        stub = CredentialServiceStub(replicas.channel(0))   # as `gateway` to replica 0
        replicas.kill(2)                                    # SIGKILL, as a node dying
        ...                                                 # every process killed on exit

Each replica is `python -m services.vault.server` listening on 127.0.0.1:0; its port is read
from its "vault serving" log line (no port is picked beforehand, so none can be taken
meanwhile). All replicas are started before any is awaited, so their migrations race.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from aicreds.vault.v1 import credentials_pb2 as pb
from aicreds.vault.v1.credentials_pb2_grpc import CredentialServiceStub

from services.common.grpc_server import CallerChannel, open_channel
from tests.support.databases import raw_fetch
from tests.support.vault import VaultFiles

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


@dataclass
class Replica:
    """One vault process."""

    index: int
    process: asyncio.subprocess.Process
    log: Path
    address: str = ""

    def serving_port(self) -> int | None:
        """The port of the "vault serving" line of its log, once it is written."""
        for line in self.log.read_text(errors="replace").splitlines():
            with contextlib.suppress(json.JSONDecodeError):  # a line still being written
                entry = json.loads(line)
                if isinstance(entry, dict) and entry.get("message") == "vault serving":
                    return int(entry["port"])
        return None


@dataclass
class Replicas:
    """Vault processes sharing one database, keyring file and callers file."""

    files: VaultFiles
    replicas: list[Replica]
    _channels: list[CallerChannel] = field(default_factory=list, repr=False)

    def __len__(self) -> int:
        return len(self.replicas)

    def channel(self, index: int, caller: str = "gateway") -> CallerChannel:
        """A channel to replica `index` authenticated as `caller`; closed on exit."""
        channel = open_channel(self.replicas[index].address, self.files.token(caller))
        self._channels.append(channel)
        return channel

    async def kill(self, index: int) -> int:
        """SIGKILL replica `index` and wait for it; its exit status."""
        process = self.replicas[index].process
        if process.returncode is None:
            process.send_signal(signal.SIGKILL)
        return await asyncio.wait_for(process.wait(), STOP_TIMEOUT)

    def alive(self, index: int) -> bool:
        return self.replicas[index].process.returncode is None


def _replica_env(files: VaultFiles) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
    env.update(files.env("127.0.0.1:0"))
    env["VAULT_LOG_LEVEL"] = "INFO"
    return env


async def _spawn(files: VaultFiles, directory: Path, index: int) -> Replica:
    log = directory / f"replica-{index}.log"
    with log.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.vault.server",
            cwd=REPO,
            env=_replica_env(files),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr,
        )
    return Replica(index, process, log)


async def _await_serving(replica: Replica, deadline: float) -> None:
    while (port := replica.serving_port()) is None:
        if replica.process.returncode is not None:
            raise AssertionError(
                f"replica {replica.index} exited early ({replica.process.returncode}):\n"
                + replica.log.read_text(errors="replace")
            )
        if time.monotonic() > deadline:
            raise AssertionError(
                f"replica {replica.index} did not start:\n"
                + replica.log.read_text(errors="replace")
            )
        await asyncio.sleep(0.05)
    replica.address = f"127.0.0.1:{port}"


@contextlib.asynccontextmanager
async def running_replicas(
    files: VaultFiles, directory: Path, count: int = 3
) -> AsyncIterator[Replicas]:
    """`count` vault processes on `files`' database, all serving; killed and awaited on exit."""
    started: list[Replica] = []
    replicas = Replicas(files, started)
    try:
        for index in range(count):
            started.append(await _spawn(files, directory, index))
        deadline = time.monotonic() + START_TIMEOUT
        for replica in started:
            await _await_serving(replica, deadline)
        yield replicas
    finally:
        for channel in replicas._channels:
            await channel.close()
        for replica in started:
            if replica.process.returncode is None:
                replica.process.send_signal(signal.SIGKILL)
        for replica in started:
            await asyncio.wait_for(replica.process.wait(), STOP_TIMEOUT)


# --- calls and reads the replica tests share -----------------------------------------------------
RPC_TIMEOUT = 10.0  # seconds for one call
RUN_TIMEOUT = 40.0  # seconds for a whole concurrent phase


def credential_stubs(replicas: Replicas) -> list[CredentialServiceStub]:
    return [CredentialServiceStub(replicas.channel(i)) for i in range(len(replicas))]


async def put_value(stub: CredentialServiceStub, user: str, key: str, value: str) -> None:
    await stub.PutCredential(
        pb.PutCredentialRequest(user_id=user, key=key, value=value), timeout=RPC_TIMEOUT
    )


async def replace_map(
    stub: CredentialServiceStub, user: str, credentials: Mapping[str, str]
) -> None:
    await stub.ReplaceCredentials(
        pb.ReplaceCredentialsRequest(user_id=user, credentials=credentials), timeout=RPC_TIMEOUT
    )


async def read_map(stub: CredentialServiceStub, user: str) -> dict[str, str]:
    got = await stub.GetCredentials(pb.GetCredentialsRequest(user_id=user), timeout=RPC_TIMEOUT)
    return dict(got.credentials)


async def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `condition` until it holds; fail after `timeout` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def duplicate_credential_rows(files: VaultFiles) -> list[tuple[object, ...]]:
    return raw_fetch(
        files.database,
        "SELECT user_id, key, COUNT(*) FROM credentials GROUP BY user_id, key HAVING COUNT(*) > 1",
    )


def data_keys_per_user(files: VaultFiles) -> dict[str, int]:
    rows = raw_fetch(files.database, "SELECT user_id, COUNT(*) FROM data_keys GROUP BY user_id")
    return {str(user): int(count) for user, count in rows}


def master_keys_of_data_keys(files: VaultFiles) -> dict[str, str]:
    rows = raw_fetch(files.database, "SELECT user_id, kek_id FROM data_keys")
    return {str(user): str(kek) for user, kek in rows}


def audit_rows(files: VaultFiles, action: str) -> list[tuple[str, tuple[str, ...], str]]:
    """(user, keys, outcome) of every audit row of `action`."""
    rows = raw_fetch(
        files.database,
        "SELECT user_id, keys, outcome FROM audit_events WHERE action = ? ORDER BY id",
        (action,),
    )
    return [(str(u), tuple(json.loads(str(k))), str(o)) for u, k, o in rows]


# --- 1. concurrent writes through three replicas ------------------------------------------------
