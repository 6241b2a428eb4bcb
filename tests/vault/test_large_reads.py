"""A user's large reads (issue 14): built, serialized and paced off the event loop, same answers.

A provider list or credential map above `INLINE_BATCH_BYTES` is opened, masked and serialized
on a worker thread, one item at a time (`servicers.serialized.concatenated`), pausing so that
it runs at most `BULK_SHARE` of the time (`bulk_reads.paced`). The answers must be exactly what
building the whole response message gives; how much that helps other users is measured in
test_resolve_isolation.py.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aicreds.vault.v1 import credentials_pb2 as cpb
from aicreds.vault.v1 import providers_pb2 as pb
from aicreds.vault.v1.credentials_pb2_grpc import CredentialServiceStub
from aicreds.vault.v1.providers_pb2_grpc import ProviderServiceStub

from services.vault.bulk_reads import (
    BULK_SHARE,
    INLINE_BATCH_BYTES,
    SLICE_S,
    BatchAbandoned,
    BulkReads,
    Pace,
    paced,
    unpaced,
)
from services.vault.providers import ProviderConfig
from services.vault.servicers.credentials import credentials_response_bytes
from services.vault.servicers.providers import list_response_bytes, provider_to_proto
from tests.support.databases import raw_execute
from tests.support.vault import VaultHandle, running_vault

# Enough providers of 64 KiB each, and credential values of 8,000 bytes, to pass the bound
# above which a batch goes to a worker thread.
PROVIDERS = 24
VALUES = 160
BIG_LIMITS = {"VAULT_MAX_PROVIDER_BYTES": str(64 * 1024 * 1024)}


def _config(i: int) -> ProviderConfig:
    return ProviderConfig(
        name=f"p{i:03d}",
        kind="custom",
        base_url="https://example.com/v1",
        headers={
            "Authorization": ["Bearer {{credential:k0001}}"],
            "X-Api-Key": ["sk-literal-in-a-header-0123456789"],
            "X-Note": ["note " * (i + 1), *["x" * 2048 for _ in range(30)]],
        },
        models=(f"model-{i}", "shared/model"),
        on_missing_credential="error",
    )


def _provider(i: int) -> pb.Provider:
    return provider_to_proto(_config(i))


@pytest.mark.no_store
@pytest.mark.parametrize("count", [0, 1, 3, 40])
def test_a_list_serialized_one_provider_at_a_time_is_the_whole_message(count: int) -> None:
    configs = [_config(i).masked() for i in range(count)]
    whole = pb.ListProvidersResponse(providers=[provider_to_proto(c) for c in configs])
    assert list_response_bytes(iter(configs)) == whole.SerializeToString()


@pytest.mark.no_store
@pytest.mark.parametrize("count", [0, 1, 300])
def test_a_map_serialized_one_pair_at_a_time_is_the_whole_map(count: int) -> None:
    # Keys and values of every length class of a varint, unicode included.
    values = {f"k{i:04d}": "v✓" * (i * 37 % 3000) for i in range(count)}
    encoded = credentials_response_bytes(iter(values.items()))
    assert cpb.GetCredentialsResponse.FromString(encoded) == cpb.GetCredentialsResponse(
        credentials=values
    )
    assert len(encoded) == cpb.GetCredentialsResponse(credentials=values).ByteSize()


@pytest.mark.no_store
def test_a_paced_batch_runs_its_share_of_the_time_in_slices() -> None:
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    taken = []
    for item in paced(range(10), clock=lambda: now[0], sleep=sleep):
        now[0] += SLICE_S / 2  # what the consumer does with each item
        taken.append(item)
    assert taken == list(range(10))
    # A pause after every two items (a slice), none after the last one.
    rest = SLICE_S * (1 - BULK_SHARE) / BULK_SHARE
    assert sleeps == pytest.approx([rest] * 4)
    assert SLICE_S / (SLICE_S + rest) == pytest.approx(BULK_SHARE)


def test_an_abandoned_batch_stops_in_its_pause_not_after_it() -> None:
    # A slice that a busy machine stretched (here: one slow item) earns a pause seven times as
    # long; the caller gives up meanwhile, and the user's next batch waits for this one to stop.
    abandoned = threading.Event()
    timer = threading.Timer(0.3, abandoned.set)  # in the pause after the first item
    started = time.monotonic()
    timer.start()
    try:
        with pytest.raises(BatchAbandoned):
            for _ in paced(range(3), abandoned=abandoned):
                time.sleep(0.2)
    finally:
        timer.cancel()
    assert time.monotonic() - started < 0.8  # not its pause of 1.4 s and another item


@pytest.mark.no_store
async def test_a_small_batch_runs_on_the_loop_and_a_large_one_on_a_paced_thread() -> None:
    bulk = BulkReads()

    def where(pace: Pace) -> tuple[bool, Pace]:
        return threading.current_thread() is threading.main_thread(), pace

    assert await bulk.run("alice", INLINE_BATCH_BYTES, where) == (True, unpaced)
    on_loop, pace = await bulk.run("alice", INLINE_BATCH_BYTES + 1, where)
    assert not on_loop and pace is not unpaced


@pytest.mark.no_store
async def test_a_users_large_batches_run_one_at_a_time_and_other_users_do_not_wait() -> None:
    bulk = BulkReads()
    first_started, release_first, other_started = (threading.Event() for _ in range(3))
    order: list[str] = []

    def first(pace: Pace) -> None:
        first_started.set()
        assert release_first.wait(10)
        order.append("first")

    def second(pace: Pace) -> None:
        order.append("second")

    def other(pace: Pace) -> None:
        other_started.set()

    size = INLINE_BATCH_BYTES + 1
    running = asyncio.create_task(bulk.run("alice", size, first))
    assert await asyncio.to_thread(first_started.wait, 10)
    queued = asyncio.create_task(bulk.run("alice", size, second))
    await bulk.run("bob", size, other)  # bob's batch runs while alice's first one is held
    assert other_started.is_set() and order == []
    release_first.set()
    await asyncio.gather(running, queued)
    assert order == ["first", "second"]
    assert repr(bulk) == "BulkReads(users_waiting=0)"


@pytest.mark.no_store
async def test_an_abandoned_batch_stops_before_the_users_next_one_starts() -> None:
    bulk = BulkReads()
    started, stopped = threading.Event(), threading.Event()
    raised: list[BaseException] = []

    def endless(pace: Pace) -> None:
        started.set()
        try:
            for _ in pace(itertools.count()):
                pass
        except BaseException as err:
            raised.append(err)
            raise
        finally:
            stopped.set()

    size = INLINE_BATCH_BYTES + 1
    call = asyncio.create_task(bulk.run("alice", size, endless))
    assert await asyncio.to_thread(started.wait, 10)
    call.cancel()  # the caller's deadline
    with pytest.raises(asyncio.CancelledError):
        await call
    # Stopped at its next item, and awaited: no thread of alice's is left running.
    assert stopped.is_set() and [type(err) for err in raised] == [BatchAbandoned]
    assert await bulk.run("alice", size, lambda pace: list(pace(range(3)))) == [0, 1, 2]


@pytest.fixture
async def vault(tmp_path: Path) -> AsyncIterator[VaultHandle]:
    async with running_vault(tmp_path, env=BIG_LIMITS) as handle:
        yield handle


async def test_a_large_list_answers_what_each_provider_answers(vault: VaultHandle) -> None:
    stub = ProviderServiceStub(vault.channel("gateway"))
    await CredentialServiceStub(vault.channel("gateway")).PutCredential(
        cpb.PutCredentialRequest(user_id="alice", key="k0001", value="v")
    )
    for i in reversed(range(PROVIDERS)):
        await stub.CreateProvider(pb.CreateProviderRequest(user_id="alice", provider=_provider(i)))
    assert PROVIDERS * 30 * 2048 > INLINE_BATCH_BYTES  # so the list is built on a thread
    listed = await stub.ListProviders(pb.ListProvidersRequest(user_id="alice"))

    each = [
        (await stub.GetProvider(pb.GetProviderRequest(user_id="alice", name=f"p{i:03d}"))).provider
        for i in range(PROVIDERS)
    ]
    assert listed == pb.ListProvidersResponse(providers=each)
    assert listed.providers[0].headers["X-Api-Key"].values != ["sk-literal-in-a-header-0123456789"]

    # A row changed without the keyring is left out of a large list too; the others stay.
    changed = raw_execute(
        vault.settings.database,
        "UPDATE providers SET base_url = ? WHERE user_id = ? AND name = ?",
        ("https://attacker.example", "alice", "p007"),
    )
    assert changed == 1
    listed = await stub.ListProviders(pb.ListProvidersRequest(user_id="alice"))
    assert listed == pb.ListProvidersResponse(providers=each[:7] + each[8:])


async def test_a_large_map_answers_every_value(vault: VaultHandle) -> None:
    stub = CredentialServiceStub(vault.channel("gateway"))
    values = {f"k{i:04d}": f"{i}-" + "v" * 8000 for i in range(VALUES)}
    await stub.ReplaceCredentials(
        cpb.ReplaceCredentialsRequest(user_id="alice", credentials=values)
    )
    assert sum(len(v.encode()) for v in values.values()) > INLINE_BATCH_BYTES
    answer = await stub.GetCredentials(cpb.GetCredentialsRequest(user_id="alice"))
    assert dict(answer.credentials) == values
    empty = await stub.GetCredentials(cpb.GetCredentialsRequest(user_id="nobody"))
    assert empty == cpb.GetCredentialsResponse()
