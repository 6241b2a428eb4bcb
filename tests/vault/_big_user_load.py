"""A big user's load on a vault, run in its own process by `test_resolve_isolation`.

    python -m tests.vault._big_user_load ADDRESS GATEWAY_TOKEN ROUTER_TOKEN CONCURRENCY PROVIDERS

`CONCURRENCY` tasks each loop over what a big user does: Resolve by model and by name (as the
router does for their model calls), ListProviders and GetCredentials (as the gateway does for
their web UI). Prints `ready` once every task has had an answer, runs until its stdin closes,
then prints how many calls it made. In a process of its own so that decoding the big answers
does not compete with the test's measurement of the other user's latency.
"""

from __future__ import annotations

import asyncio
import sys

from aicreds.vault.v1 import credentials_pb2 as cpb
from aicreds.vault.v1 import providers_pb2 as pb
from aicreds.vault.v1.credentials_pb2_grpc import CredentialServiceStub
from aicreds.vault.v1.providers_pb2_grpc import ProviderServiceStub

from services.common.grpc_server import open_channel


async def _main(
    address: str,
    gateway_token: str,
    router_token: str,
    concurrency: int,
    rate: float,
    providers: int,
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    answered: set[int] = set()
    calls = 0
    async with (
        open_channel(address, gateway_token) as gateway,
        open_channel(address, router_token) as router_channel,
    ):
        creds = CredentialServiceStub(gateway)
        listing = ProviderServiceStub(gateway)
        router = CredentialServiceStub(router_channel)

        async def big_user(worker: int) -> None:
            nonlocal calls
            i = worker
            next_call = loop.time()
            while not stop.is_set():
                # Each task its share of the rate; a late call goes at once (no catching up).
                next_call = max(next_call + concurrency / rate, loop.time())
                n = i % providers
                step = i % 4
                if step == 0:
                    await router.Resolve(cpb.ResolveRequest(user_id="big", model=f"model-{n}"))
                elif step == 1:
                    await router.Resolve(
                        cpb.ResolveRequest(user_id="big", provider_name=f"p{n:03d}")
                    )
                elif step == 2:
                    await listing.ListProviders(pb.ListProvidersRequest(user_id="big"))
                else:
                    await creds.GetCredentials(cpb.GetCredentialsRequest(user_id="big"))
                calls += 1
                i += 1
                await asyncio.sleep(max(0.0, next_call - loop.time()))
                if worker not in answered:
                    answered.add(worker)
                    if len(answered) == concurrency:
                        print("ready", flush=True)

        async def until_stdin_closes() -> None:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, sys.stdin.read)
            stop.set()

        await asyncio.gather(until_stdin_closes(), *(big_user(w) for w in range(concurrency)))
    print(f"calls {calls}", flush=True)


if __name__ == "__main__":
    address, gateway_token, router_token, concurrency, rate, providers = sys.argv[1:7]
    asyncio.run(
        _main(address, gateway_token, router_token, int(concurrency), float(rate), int(providers))
    )
