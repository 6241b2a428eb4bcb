"""Token usage at the vault (issue 18): `RecordUsage` adds up per user, day, provider and model,
`GetUsage` reads a user's own range; the row limit per day; the rights. On both backends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import grpc
import grpc.aio
import pytest
from aicreds.vault.v1 import usage_pb2 as pb
from aicreds.vault.v1.usage_pb2_grpc import UsageServiceStub

from services.common.errors import InvalidArgument
from services.common.usage_rules import MAX_TOKENS, OVERFLOW
from services.vault.store.usage import SqlUsageStore
from services.vault.usage import UsageBook, UsageCounts, UsageEntry
from tests.support.databases import open_test_database
from tests.support.vault import VaultHandle, running_vault

Row = tuple[str, str, str, int, int, int]


@pytest.fixture
async def vault(tmp_path: Path) -> AsyncIterator[VaultHandle]:
    async with running_vault(tmp_path) as handle:
        yield handle


def entry(user: str, provider: str, model: str, inputs: int, outputs: int) -> pb.UsageEntry:
    return pb.UsageEntry(
        user_id=user,
        provider=provider,
        model=model,
        input_tokens=inputs,
        output_tokens=outputs,
        calls=1,
    )


async def record(vault: VaultHandle, *entries: pb.UsageEntry) -> None:
    stub = UsageServiceStub(vault.channel("router"))
    await stub.RecordUsage(pb.RecordUsageRequest(entries=list(entries)), timeout=10)


async def usage(vault: VaultHandle, user: str, first: str = "", last: str = "") -> list[Row]:
    today = datetime.now(UTC).date().isoformat()
    stub = UsageServiceStub(vault.channel("gateway"))
    reply = await stub.GetUsage(
        pb.GetUsageRequest(user_id=user, from_day=first or today, to_day=last or today),
        timeout=10,
    )
    return [
        (r.day, r.provider, r.model, r.input_tokens, r.output_tokens, r.calls) for r in reply.rows
    ]


async def test_reports_add_up_per_provider_and_model(vault: VaultHandle) -> None:
    today = datetime.now(UTC).date().isoformat()
    await record(
        vault,
        entry("alice", "openai", "gpt-4o", 10, 3),
        entry("alice", "openai", "gpt-4o", 5, 2),
        entry("alice", "anthropic", "claude-3.5-sonnet", 7, 1),
    )
    await record(vault, entry("alice", "openai", "gpt-4o", 1, 1))
    assert await usage(vault, "alice") == [
        (today, "anthropic", "claude-3.5-sonnet", 7, 1, 1),
        (today, "openai", "gpt-4o", 16, 6, 3),
    ]


async def test_concurrent_reports_add_up_exactly(vault: VaultHandle) -> None:
    await asyncio.gather(
        *(record(vault, entry("alice", "openai", "gpt-4o", 3, 2)) for _ in range(20))
    )
    ((_, _, _, inputs, outputs, calls),) = await usage(vault, "alice")
    assert (inputs, outputs, calls) == (60, 40, 20)


async def test_each_user_reads_only_their_own(vault: VaultHandle) -> None:
    await record(
        vault, entry("alice", "openai", "gpt-4o", 10, 3), entry("bob", "openai", "gpt-4o", 1, 1)
    )
    assert [row[3:] for row in await usage(vault, "bob")] == [(1, 1, 1)]
    assert [row[3:] for row in await usage(vault, "alice")] == [(10, 3, 1)]
    assert await usage(vault, "carol") == []


@pytest.mark.parametrize(
    "bad",
    [
        entry("", "openai", "gpt-4o", 1, 1),
        entry("alice", "Not A Name", "gpt-4o", 1, 1),
        entry("alice", "openai", "", 1, 1),
        entry("alice", "openai", "x" * 257, 1, 1),
        entry("alice", "openai", "gpt-4o", -1, 1),
        entry("alice", "openai", "gpt-4o", 1, MAX_TOKENS + 1),
        pb.UsageEntry(user_id="alice", provider="openai", model="gpt-4o", calls=0),
    ],
)
async def test_a_bad_entry_refuses_the_whole_report(vault: VaultHandle, bad: pb.UsageEntry) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await record(vault, entry("alice", "openai", "gpt-4o", 1, 1), bad)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await usage(vault, "alice") == []


async def test_ranges_are_checked(vault: VaultHandle) -> None:
    for first, last in (("2026-01-02", "2026-01-01"), ("2024-01-01", "2026-01-01"), ("x", "")):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await usage(vault, "alice", first, last)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_rights_recording_is_the_routers_reading_the_gateways(vault: VaultHandle) -> None:
    gateway = UsageServiceStub(vault.channel("gateway"))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await gateway.RecordUsage(
            pb.RecordUsageRequest(entries=[entry("alice", "openai", "gpt-4o", 1, 1)])
        )
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    router = UsageServiceStub(vault.channel("router"))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await router.GetUsage(pb.GetUsageRequest(user_id="alice"))
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED


# -- the domain on the store: days and the row limit -------------------------------------------


class Clock:
    def __init__(self, today: date) -> None:
        self.today = today

    def __call__(self) -> date:
        return self.today


def counts(provider: str, model: str, inputs: int = 1) -> UsageCounts:
    return UsageCounts(provider, model, inputs, 1, 1)


async def test_days_are_kept_apart_and_ranges_read(tmp_path: Path) -> None:
    db = await open_test_database(tmp_path)
    try:
        clock = Clock(date(2026, 3, 1))
        book = UsageBook(SqlUsageStore(db), clock)
        for day in range(3):
            clock.today = date(2026, 3, 1) + timedelta(day)
            await book.record([UsageEntry("alice", counts("openai", "gpt-4o", day + 1))])
        rows = await book.get("alice", "2026-03-02", "2026-03-03")
        assert [(r.day, r.input_tokens) for r in rows] == [("2026-03-02", 2), ("2026-03-03", 3)]
        # No range: the 30 days ending today (the clock's).
        assert len(await book.get("alice", "", "")) == 3
        with pytest.raises(InvalidArgument):
            await book.get("alice", "2025-01-01", "2026-03-03")
    finally:
        await db.close()


async def test_pairs_beyond_the_row_limit_go_to_the_overflow_row(tmp_path: Path) -> None:
    db = await open_test_database(tmp_path)
    try:
        store = SqlUsageStore(db)
        day = "2026-03-01"
        await store.add_usage("alice", day, [counts("p", "m1"), counts("p", "m2")], max_rows=3)
        await store.add_usage(
            "alice", day, [counts("p", "m3"), counts("p", "m4"), counts("q", "m5")], max_rows=3
        )
        # Known pairs still add to their own rows once the day is full.
        await store.add_usage("alice", day, [counts("p", "m1", 10)], max_rows=3)
        await store.add_usage("bob", day, [counts("p", "m9")], max_rows=3)
        rows = await store.get_usage("alice", day, day)
        assert [(r.provider, r.model, r.input_tokens, r.calls) for r in rows] == [
            (OVERFLOW, OVERFLOW, 2, 2),
            ("p", "m1", 11, 2),
            ("p", "m2", 1, 1),
            ("p", "m3", 1, 1),
        ]
        assert [(r.model, r.calls) for r in await store.get_usage("bob", day, day)] == [("m9", 1)]
        # Another day starts with room again.
        await store.add_usage("alice", "2026-03-02", [counts("p", "m4")], max_rows=3)
        assert [r.model for r in await store.get_usage("alice", "2026-03-02", "2026-03-02")] == [
            "m4"
        ]
    finally:
        await db.close()
