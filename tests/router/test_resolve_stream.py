"""The router's lookups on long-lived `ResolveStream`s: the same answers and errors as the unary
`Resolve`, a deadline per lookup, a bound on lookups in flight per stream, a broken stream
failing its lookups and replaced, replicas reached in turn and failed over, and the unary
`Resolve` for a vault without streams."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import grpc.aio
import pytest
from aicreds.vault.v1 import credentials_pb2 as cpb
from aicreds.vault.v1 import providers_pb2 as ppb
from aicreds.vault.v1.credentials_pb2_grpc import CredentialServiceStub
from aicreds.vault.v1.providers_pb2_grpc import ProviderServiceStub

from services.common import tracing
from services.common.errors import AicredsError
from services.router.errors import VaultUnavailable
from services.router.invocation import Resolution
from services.router.resolve_client import ResolveClient, open_vault_channel
from services.router.resolve_stream import ResolveStreams, StreamEnded
from tests.support.vault import VaultHandle, running_vault
from tests.vault.test_resolve import CREDENTIALS, PROVIDERS

SERVICE = "aicreds.vault.v1.CredentialService"
CALLERS = {"gateway": ["manage"], "router": ["resolve"]}

# -- against a real vault: the same as the unary Resolve -------------------------------------------


@pytest.fixture
async def vault(tmp_path: Path) -> AsyncIterator[VaultHandle]:
    async with running_vault(tmp_path, CALLERS) as handle:
        manage = CredentialServiceStub(handle.channel("gateway"))
        await manage.ReplaceCredentials(
            cpb.ReplaceCredentialsRequest(user_id="alice", credentials=CREDENTIALS)
        )
        providers = ProviderServiceStub(handle.channel("gateway"))
        for provider in PROVIDERS:
            await providers.CreateProvider(
                ppb.CreateProviderRequest(user_id="alice", provider=provider)
            )
        yield handle


LOOKUPS: list[tuple[str, str | None, str | None]] = [
    ("alice", "openai", None),
    ("alice", None, "claude-sonnet-4"),
    ("alice", None, "anthropic/claude-x"),
    ("alice", "nope", None),
    ("alice", None, "gpt-5"),
    ("alice", "bad name!", None),
    ("bob", None, "gpt-4o"),
]


async def _outcome(
    client: ResolveClient, user: str, provider: str | None, model: str | None
) -> Resolution | tuple[type, str, str]:
    try:
        return await client.resolve(user, provider_name=provider, model=model, timeout=10)
    except AicredsError as err:
        return type(err), err.message, err.reason


def _via_stream(caplog: pytest.LogCaptureFixture) -> int:
    return sum(
        1
        for r in caplog.records
        if r.name == "aicreds.access" and getattr(r, "fields", {}).get("via")
    )


async def test_streamed_lookups_answer_and_fail_exactly_as_unary_ones(
    vault: VaultHandle, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aicreds.access")
    channel = open_vault_channel(vault.address, vault.token("router"))
    streamed, unary = ResolveClient(channel, vault.address), ResolveClient(channel, streams=0)
    try:
        unary_outcomes = [await _outcome(unary, *lookup) for lookup in LOOKUPS]
        assert _via_stream(caplog) == 0
        streamed_outcomes = await asyncio.gather(*(_outcome(streamed, *x) for x in LOOKUPS))
        assert _via_stream(caplog) == len(LOOKUPS)  # they went on the stream
    finally:
        await streamed.aclose()
        await channel.close()
    # The unary client names no address: the messages differ only by it.
    for got, expected in zip(streamed_outcomes, unary_outcomes, strict=True):
        if isinstance(got, tuple) and isinstance(expected, tuple):
            got = (got[0], got[1].replace(f" at {vault.address}", ""), got[2])
        assert got == expected
    first = streamed_outcomes[0]
    assert isinstance(first, Resolution)
    assert first.values["openai_api_key"] == CREDENTIALS["openai_api_key"]
    reasons = [o[2] for o in streamed_outcomes if isinstance(o, tuple)]
    assert reasons == [
        "provider_not_found",
        "model_not_found",
        "invalid_argument",
        "model_not_found",
    ]


async def test_a_router_without_the_resolve_right_is_refused_on_the_stream_too(
    vault: VaultHandle,
) -> None:
    channel = open_vault_channel(vault.address, vault.token("gateway"))
    client = ResolveClient(channel)
    try:
        outcome = await _outcome(client, "alice", "openai", None)
    finally:
        await client.aclose()
        await channel.close()
    assert isinstance(outcome, tuple)
    assert outcome[0].__name__ == "Internal" and outcome[2] == "vault_refused"
    assert "PERMISSION_DENIED" in outcome[1]


async def test_a_refused_stream_always_reports_the_refusal_and_is_not_asked_again(
    vault: VaultHandle,
) -> None:
    # The vault refuses the stream as it opens. A lookup written meanwhile used to make grpc.aio
    # report INTERNAL instead (about one stream in 300 here), and INTERNAL is asked again on a
    # new stream: every lookup here must end on its one stream, with the refusal.
    channel = open_vault_channel(vault.address, vault.token("gateway"))
    stub = CredentialServiceStub(channel)
    opened = 0

    class CountingStub:
        def ResolveStream(self, *args: object, **kwargs: object) -> object:  # noqa: N802
            nonlocal opened
            opened += 1
            return stub.ResolveStream(*args, **kwargs)

    try:
        for lookup in range(1, 301):
            streams = ResolveStreams(CountingStub(), streams=1)
            try:
                with pytest.raises(StreamEnded) as ended:
                    await streams.ask(cpb.ResolveStreamRequest(), 10)
            finally:
                await streams.aclose()
            assert ended.value.code == grpc.StatusCode.PERMISSION_DENIED
            assert opened == lookup
    finally:
        await channel.close()


# -- against a vault of the test's own: deadlines, bounds, broken streams, replicas ------------


@dataclass
class StreamVault:
    """Serves `ResolveStream` (and the unary `Resolve`) with answers the test controls."""

    name: str = "vault"
    hold: asyncio.Event | None = None  # set: answer; unset: keep the requests waiting
    break_streams: int = 0  # end this many streams with UNAVAILABLE after their first request
    streams_opened: int = 0
    seen: Counter[str] = field(default_factory=Counter)
    server: grpc.aio.Server | None = None
    port: int = 0

    def reply(self) -> cpb.ResolveResponse:
        provider = ppb.Provider(name="openai", base_url="https://api.openai.com/v1")
        return cpb.ResolveResponse(provider=provider, values={"served_by": self.name})

    async def resolve_stream(
        self, requests: AsyncIterator[cpb.ResolveStreamRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[cpb.ResolveStreamResponse]:
        self.streams_opened += 1
        await context.send_initial_metadata(())  # accepted, as grpc_handlers does
        breaking = self.break_streams > 0
        if breaking:
            self.break_streams -= 1
        async for message in requests:
            self.seen["stream"] += 1
            if breaking:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "going away")
            if self.hold is not None:
                await self.hold.wait()
            yield cpb.ResolveStreamResponse(id=message.id, response=self.reply())

    async def resolve(
        self, request: cpb.ResolveRequest, context: grpc.aio.ServicerContext
    ) -> cpb.ResolveResponse:
        self.seen["unary"] += 1
        return self.reply()

    async def start(self, streams: bool = True) -> None:
        handlers = {
            "Resolve": grpc.unary_unary_rpc_method_handler(
                self.resolve, cpb.ResolveRequest.FromString, cpb.ResolveResponse.SerializeToString
            )
        }
        if streams:
            handlers["ResolveStream"] = grpc.stream_stream_rpc_method_handler(
                self.resolve_stream,
                cpb.ResolveStreamRequest.FromString,
                cpb.ResolveStreamResponse.SerializeToString,
            )
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        self.port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self.server = server

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(0)
            self.server = None


@pytest.fixture
async def stream_vaults() -> AsyncIterator[list[StreamVault]]:
    vaults = [StreamVault("first"), StreamVault("second")]
    yield vaults
    for v in vaults:
        await v.stop()


async def _ask(client: ResolveClient, timeout: float = 5) -> Resolution:
    return await client.resolve("u1", provider_name="openai", model=None, timeout=timeout)


async def test_a_lookup_not_answered_in_time_fails_and_keeps_its_place_until_answered(
    stream_vaults: list[StreamVault],
) -> None:
    vault = stream_vaults[0]
    vault.hold = asyncio.Event()
    await vault.start()
    channel = open_vault_channel(f"127.0.0.1:{vault.port}", "tok")
    client = ResolveClient(channel, streams=1, max_in_flight=1)
    try:
        with pytest.raises(VaultUnavailable):
            await _ask(client, timeout=0.3)
        # The stream's one place is still the first lookup's: the second is never sent.
        with pytest.raises(VaultUnavailable):
            await _ask(client, timeout=0.3)
        assert vault.seen["stream"] == 1
        vault.hold.set()  # the late answer comes (and is dropped), freeing the place
        resolution = await _ask(client)
        assert resolution.values == {"served_by": "first"}
        assert vault.seen["stream"] == 2 and vault.streams_opened == 1
    finally:
        await client.aclose()
        await channel.close()


async def test_a_broken_stream_fails_its_lookups_which_are_asked_again_on_a_new_one(
    stream_vaults: list[StreamVault],
) -> None:
    vault = stream_vaults[0]
    await vault.start()
    channel = open_vault_channel(f"127.0.0.1:{vault.port}", "tok")
    client = ResolveClient(channel)
    try:
        vault.break_streams = 1
        assert (await _ask(client)).values == {"served_by": "first"}
        assert vault.streams_opened == 2 and vault.seen["stream"] == 2
        # Every stream breaking: after three streams the lookup is UNAVAILABLE...
        vault.break_streams = 3
        with pytest.raises(VaultUnavailable):
            await _ask(client)
        assert vault.streams_opened == 5
        # ... and the next one opens a stream again.
        assert (await _ask(client)).values == {"served_by": "first"}
    finally:
        await client.aclose()
        await channel.close()
    assert vault.seen["unary"] == 0


async def test_a_vault_without_resolve_stream_is_asked_with_the_unary_resolve(
    stream_vaults: list[StreamVault],
) -> None:
    vault = stream_vaults[0]
    await vault.start(streams=False)
    channel = open_vault_channel(f"127.0.0.1:{vault.port}", "tok")
    client = ResolveClient(channel)
    try:
        for _ in range(3):
            assert (await _ask(client)).values == {"served_by": "first"}
    finally:
        await client.aclose()
        await channel.close()
    assert vault.seen["unary"] == 3


async def test_streams_reach_every_replica_and_fail_over_when_one_goes(
    stream_vaults: list[StreamVault],
) -> None:
    first, second = stream_vaults
    await first.start()
    await second.start()
    channel = open_vault_channel(f"ipv4:127.0.0.1:{first.port},127.0.0.1:{second.port}", "tok")
    # Unary lookups first, so that the channel has connected to both replicas (round robin
    # sends new streams only to connected ones).
    unary = ResolveClient(channel, streams=0)
    while not (first.seen["unary"] and second.seen["unary"]):
        await _ask(unary)
    client = ResolveClient(channel)
    try:
        served = Counter([(await _ask(client)).values["served_by"] for _ in range(40)])
        assert served["first"] >= 10 and served["second"] >= 10
        await first.stop()
        served = Counter([(await _ask(client)).values["served_by"] for _ in range(20)])
        assert served == Counter({"second": 20})
    finally:
        await client.aclose()
        await channel.close()


async def test_with_tracing_on_each_lookup_is_a_unary_resolve(
    stream_vaults: list[StreamVault], monkeypatch: pytest.MonkeyPatch
) -> None:
    vault = stream_vaults[0]
    await vault.start()
    channel = open_vault_channel(f"127.0.0.1:{vault.port}", "tok")
    client = ResolveClient(channel)
    monkeypatch.setattr(tracing, "active", True)
    try:
        for _ in range(3):
            assert (await _ask(client)).values == {"served_by": "first"}
    finally:
        await client.aclose()
        await channel.close()
    assert (vault.seen["unary"], vault.seen["stream"]) == (3, 0)
