"""SIGKILL while writing: every acknowledged write survives, no replace-all is half applied."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import grpc
import grpc.aio
from aicreds.vault.v1 import credentials_pb2 as pb
from aicreds.vault.v1.credentials_pb2_grpc import CredentialServiceStub

from services.common.grpc_server import open_channel
from tests.support.vault import prepare_vault_files, running_vault

REPO = Path(__file__).resolve().parents[2]
MAP_SIZE = 20


async def _start_subprocess_vault(tmp_path: Path) -> tuple[asyncio.subprocess.Process, str, str]:
    files = prepare_vault_files(tmp_path)
    log = tmp_path / "vault.log"
    env = {**os.environ, **files.env("127.0.0.1:0"), "VAULT_LOG_LEVEL": "INFO"}
    with log.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.vault.server",
            cwd=REPO,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr,
        )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            entry = json.loads(line)
            if entry.get("message") == "vault serving":
                return process, f"127.0.0.1:{entry['port']}", files.token("gateway")
        if process.returncode is not None:
            raise AssertionError(f"vault exited early: {log.read_text()}")
        await asyncio.sleep(0.05)
    process.kill()
    raise AssertionError("vault did not start")


async def test_sigkill_loses_no_acknowledged_write_and_no_replace_is_partial(
    tmp_path: Path,
) -> None:
    process, address, token = await _start_subprocess_vault(tmp_path)
    acknowledged_puts: dict[str, str] = {}
    acknowledged_generation = -1
    stop = asyncio.Event()

    async with open_channel(address, token) as channel:
        stub = CredentialServiceStub(channel)

        async def put_forever(worker: int) -> None:
            i = 0
            while not stop.is_set():
                key, value = f"w{worker}_k{i}", f"value-{worker}-{i}"
                try:
                    await stub.PutCredential(
                        pb.PutCredentialRequest(user_id="puts", key=key, value=value), timeout=5
                    )
                except grpc.aio.AioRpcError:
                    return
                acknowledged_puts[key] = value
                i += 1

        async def replace_forever() -> None:
            nonlocal acknowledged_generation
            generation = 0
            while not stop.is_set():
                credentials = {f"m{j}": f"gen-{generation}" for j in range(MAP_SIZE)}
                try:
                    await stub.ReplaceCredentials(
                        pb.ReplaceCredentialsRequest(user_id="maps", credentials=credentials),
                        timeout=5,
                    )
                except grpc.aio.AioRpcError:
                    return
                acknowledged_generation = generation
                generation += 1

        writers = [asyncio.create_task(put_forever(w)) for w in range(4)]
        writers.append(asyncio.create_task(replace_forever()))
        # Kill once writes are flowing, while they are still in flight.
        while len(acknowledged_puts) < 40 or acknowledged_generation < 5:
            await asyncio.sleep(0.01)
            assert process.returncode is None
        process.send_signal(signal.SIGKILL)
        await process.wait()
        stop.set()
        await asyncio.gather(*writers)

    assert process.returncode == -signal.SIGKILL
    async with running_vault(tmp_path) as vault:
        stub = CredentialServiceStub(vault.channel("gateway"))
        puts = dict(
            (await stub.GetCredentials(pb.GetCredentialsRequest(user_id="puts"))).credentials
        )
        maps = dict(
            (await stub.GetCredentials(pb.GetCredentialsRequest(user_id="maps"))).credentials
        )

    for key, value in acknowledged_puts.items():
        assert puts.get(key) == value, key
    assert set(maps) == {f"m{j}" for j in range(MAP_SIZE)}
    generations = {int(v.removeprefix("gen-")) for v in maps.values()}
    assert len(generations) == 1, "a replace-all was half applied"
    assert generations.pop() >= acknowledged_generation
