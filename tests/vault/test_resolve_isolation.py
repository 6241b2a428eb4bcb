"""One user's many large providers and large map do not slow another user's Resolve (issue 14).

Resolve used to read all of a user's providers on the event loop, and GetCredentials decrypted
the whole map there: a user with hundreds of large providers stalled everyone. Latency is
compared as a ratio within one run (the machine is shared and noisy), with a generous bound.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

import pytest
from aicreds.vault.v1 import credentials_pb2 as cpb
from aicreds.vault.v1 import providers_pb2 as pb
from aicreds.vault.v1.credentials_pb2_grpc import CredentialServiceStub

from tests.vault.test_user_limits import limited_vault

BIG_PROVIDERS = 500
# Each big provider near the size a provider may have: 32 header values of 2 KiB.
BIG_HEADER = ["{{credential:k0001}}" + "x" * 2048 for _ in range(32)]


def _provider(name: str, models: list[str], values: list[str]) -> pb.Provider:
    return pb.Provider(
        name=name,
        kind=pb.PROVIDER_KIND_CUSTOM,
        base_url="https://example.com",
        headers={"X-Big": pb.HeaderValues(values=values)},
        models=models,
    )


async def _p50_resolve(stub: CredentialServiceStub, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        await stub.Resolve(cpb.ResolveRequest(user_id="small", model="small-model"))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@pytest.mark.xfail(
    strict=False,
    reason="issue 14 item 4 is not finished: concurrent GetCredentials of a big map still"
    " raise another user's p50 Resolve about 10x (response serialisation on the loop)",
)
async def test_a_big_user_does_not_slow_another_users_resolve(tmp_path: Path) -> None:
    limits = {"VAULT_MAX_PROVIDERS": "1000", "VAULT_MAX_PROVIDER_BYTES": str(1 << 30)}
    async with limited_vault(tmp_path, limits) as (creds, providers, router):
        await creds.ReplaceCredentials(
            cpb.ReplaceCredentialsRequest(
                user_id="big", credentials={f"k{i:04d}": "v" * 1000 for i in range(200)}
            )
        )
        for i in range(BIG_PROVIDERS):
            await providers.CreateProvider(
                pb.CreateProviderRequest(
                    user_id="big", provider=_provider(f"p{i:03d}", [f"model-{i}"], BIG_HEADER)
                )
            )
        await providers.CreateProvider(
            pb.CreateProviderRequest(
                user_id="small", provider=_provider("small", ["small-model"], ["x"])
            )
        )
        await _p50_resolve(router, 5)  # warm up
        alone = await _p50_resolve(router, 40)

        stop = asyncio.Event()

        async def big_resolves() -> None:
            while not stop.is_set():
                await router.Resolve(cpb.ResolveRequest(user_id="big", model="model-499"))

        async def big_maps() -> None:
            while not stop.is_set():
                await creds.GetCredentials(cpb.GetCredentialsRequest(user_id="big"))

        load = [asyncio.create_task(big_resolves()), asyncio.create_task(big_maps())]
        await asyncio.sleep(0.2)
        try:
            loaded = await _p50_resolve(router, 40)
        finally:
            stop.set()
            await asyncio.gather(*load)
        assert loaded < 5 * alone, f"p50 alone {alone * 1e3:.2f} ms, loaded {loaded * 1e3:.2f} ms"
