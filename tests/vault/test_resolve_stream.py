"""`ResolveStream`: many `Resolve`s on one stream, each answered and audited as the unary RPC,
the caller checked once when the stream opens, at most a bounded number worked on at once."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
from aicreds.vault.v1 import credentials_pb2 as cpb
from aicreds.vault.v1.credentials_pb2_grpc import CredentialServiceStub

from services.common.grpc_server import open_channel
from services.vault.servicers.resolve_stream import answer_resolve_stream
from tests.support.databases import raw_fetch
from tests.support.metrics import delta, scrape
from tests.support.vault import VaultHandle, running_vault
from tests.vault.test_resolve import (
    CREDENTIALS,
    LITERAL,
    _accept_audits_again,
    _refuse_resolve_audits,
    vault,
)

__all__ = ["vault"]  # the fixture, shared with test_resolve

REQUESTS = [
    cpb.ResolveRequest(user_id="alice", provider_name="openai"),
    cpb.ResolveRequest(user_id="alice", model="claude-sonnet-4"),
    cpb.ResolveRequest(user_id="alice", model="anthropic/claude-x"),
    cpb.ResolveRequest(user_id="alice", keys=cpb.KeyNames(keys=["openai_api_key", "nope"])),
    cpb.ResolveRequest(user_id="bob", provider_name="openai"),
    cpb.ResolveRequest(user_id="alice", model="gpt-5"),
    cpb.ResolveRequest(user_id="alice", provider_name="bad name!"),
    cpb.ResolveRequest(user_id="alice"),
]


async def _on_one_stream(
    stub: CredentialServiceStub, requests: list[cpb.ResolveRequest]
) -> dict[int, cpb.ResolveStreamResponse]:
    """Every request on one stream at once (ids 100, 101, ...), answers by id."""
    messages = [
        cpb.ResolveStreamRequest(id=100 + n, request=r, request_id=f"req-{n}")
        for n, r in enumerate(requests)
    ]
    answers = {}
    async for answer in stub.ResolveStream(iter(messages), timeout=30):
        answers[answer.id] = answer
    return answers


async def _unary_outcome(
    stub: CredentialServiceStub, request: cpb.ResolveRequest
) -> cpb.ResolveResponse | tuple[int, str, str]:
    try:
        response: cpb.ResolveResponse = await stub.Resolve(request, timeout=10)
        return response
    except grpc.aio.AioRpcError as err:
        reason = dict(err.trailing_metadata() or ()).get("x-error-reason", "")
        return err.code().value[0], err.details() or "", str(reason)


def _stream_outcome(
    answer: cpb.ResolveStreamResponse,
) -> cpb.ResolveResponse | tuple[int, str, str]:
    if answer.HasField("error"):
        return answer.error.code, answer.error.message, answer.error.reason
    return answer.response


async def test_each_request_is_answered_by_id_exactly_as_the_unary_resolve(
    vault: VaultHandle,
) -> None:
    stub = CredentialServiceStub(vault.channel("router"))
    answers = await _on_one_stream(stub, REQUESTS)
    assert sorted(answers) == [100 + n for n in range(len(REQUESTS))]
    for n, request in enumerate(REQUESTS):
        assert _stream_outcome(answers[100 + n]) == await _unary_outcome(stub, request)
    # Successes and failures of every kind, so the comparison above compared something.
    codes = [a.error.code for a in answers.values() if a.HasField("error")]
    assert sorted(codes) == [3, 3, 5, 5]  # INVALID_ARGUMENT x2, NOT_FOUND x2
    assert answers[100].response.values["openai_api_key"] == CREDENTIALS["openai_api_key"]


async def test_every_request_is_audited_and_logged_as_a_resolve_without_values(
    vault: VaultHandle, caplog: pytest.LogCaptureFixture
) -> None:
    stub = CredentialServiceStub(vault.channel("router"))
    with caplog.at_level(logging.DEBUG):
        await _on_one_stream(stub, REQUESTS)
    rows = raw_fetch(
        vault.settings.database,
        "SELECT caller, outcome FROM audit_events WHERE action = 'credentials.resolve'",
    )
    assert sorted(rows) == sorted(
        [("router", "ok")] * 4
        + [
            ("router", "provider_not_found"),
            ("router", "model_not_found"),
            ("router", "invalid_argument"),
        ]
    )  # as for the unary Resolve, a request naming no target is refused before it is audited
    lines = [r.fields for r in caplog.records if r.name == "aicreds.access"]  # type: ignore[attr-defined]
    per_request = [f for f in lines if f.get("via", "").endswith("/ResolveStream")]
    assert sorted(f["request_id"] for f in per_request) == sorted(
        f"req-{n}" for n in range(len(REQUESTS))
    )
    assert {f["method"] for f in per_request} == {"/aicreds.vault.v1.CredentialService/Resolve"}
    assert (
        sorted(f["code"] for f in per_request)
        == ["INVALID_ARGUMENT"] * 2 + ["NOT_FOUND"] * 2 + ["OK"] * 4
    )
    logged = json.dumps([r.__dict__ for r in caplog.records], default=str)
    for value in (*CREDENTIALS.values(), LITERAL):
        assert value not in logged


@pytest.mark.parametrize(
    ("caller", "code"),
    [("gateway", grpc.StatusCode.PERMISSION_DENIED), (None, grpc.StatusCode.UNAUTHENTICATED)],
)
async def test_a_caller_without_the_resolve_right_is_refused_when_the_stream_opens(
    vault: VaultHandle, caller: str | None, code: grpc.StatusCode
) -> None:
    stub = CredentialServiceStub(vault.channel(caller))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _on_one_stream(stub, REQUESTS[:1])
    assert info.value.code() == code
    rows = raw_fetch(
        vault.settings.database,
        "SELECT COUNT(*) FROM audit_events WHERE action = 'credentials.resolve'",
    )
    assert rows == [(0,)]  # nothing was resolved


async def test_a_request_whose_audit_fails_gets_nothing_and_the_stream_goes_on(
    vault: VaultHandle,
) -> None:
    stub = CredentialServiceStub(vault.channel("router"))
    _refuse_resolve_audits(vault.settings.database)
    refused = await _on_one_stream(stub, REQUESTS[:2])
    for answer in refused.values():
        assert answer.HasField("error") and not answer.HasField("response")
        assert (answer.error.code, answer.error.message) == (13, "internal error")
    _accept_audits_again(vault.settings.database)
    resolved = await _on_one_stream(stub, REQUESTS[:1])
    assert resolved[100].response.values["openai_api_key"] == CREDENTIALS["openai_api_key"]


async def test_a_stream_carries_many_requests_in_turn(vault: VaultHandle) -> None:
    """The caller writes a request only after the previous answer: one stream, many calls."""
    stub = CredentialServiceStub(vault.channel("router"))
    call = stub.ResolveStream(None, timeout=30)
    for n in range(20):
        await call.write(cpb.ResolveStreamRequest(id=n, request=REQUESTS[n % 2]))
        answer = await call.read()
        assert isinstance(answer, cpb.ResolveStreamResponse) and answer.id == n
        assert answer.HasField("response")
    await call.done_writing()
    assert await call.read() == grpc.aio.EOF
    assert await call.code() == grpc.StatusCode.OK


# -- the bound on requests worked on at once (no server needed) -----------------------------------


async def test_no_more_than_max_in_flight_requests_are_worked_on_at_once() -> None:
    started: list[str] = []
    release = asyncio.Event()

    async def resolve(request: cpb.ResolveRequest) -> cpb.ResolveResponse:
        started.append(request.user_id)
        await release.wait()
        return cpb.ResolveResponse(upstream_model=request.user_id)

    read: list[int] = []

    async def requests() -> AsyncIterator[cpb.ResolveStreamRequest]:
        for n in range(5):
            read.append(n)
            yield cpb.ResolveStreamRequest(id=n, request=cpb.ResolveRequest(user_id=f"u{n}"))

    answers = answer_resolve_stream(requests(), resolve, max_in_flight=2)
    first = asyncio.ensure_future(answers.__anext__())
    for _ in range(20):
        await asyncio.sleep(0)
    assert started == ["u0", "u1"]  # the third request waits for a place
    assert read == [0, 1, 2]  # ... and the fourth is not even read
    release.set()
    got = [await first] + [a async for a in answers]
    assert sorted(a.id for a in got) == [0, 1, 2, 3, 4]
    assert all(a.response.upstream_model == f"u{a.id}" for a in got)


async def test_each_request_is_counted_in_the_metrics_as_a_resolve(tmp_path: Path) -> None:
    async with running_vault(tmp_path, env={"VAULT_METRICS_LISTEN": "127.0.0.1:0"}) as handle:
        await CredentialServiceStub(handle.channel("gateway")).ReplaceCredentials(
            cpb.ReplaceCredentialsRequest(user_id="alice", credentials=CREDENTIALS)
        )
        assert handle.running.server.metrics is not None
        port = handle.running.server.metrics.port
        stub = CredentialServiceStub(handle.channel("router"))
        keys = cpb.ResolveRequest(user_id="alice", keys=cpb.KeyNames(keys=["openai_api_key"]))
        before = await scrape(port)
        await _on_one_stream(stub, [keys, keys, keys, REQUESTS[4]])
        after = await scrape(port)
    requests = "aicreds_vault_grpc_requests_total"
    resolve = "/aicreds.vault.v1.CredentialService/Resolve"
    assert delta(before, after, requests, method=resolve, code="OK") == 3
    assert delta(before, after, requests, method=resolve, code="NOT_FOUND") == 1
    assert delta(before, after, requests, method=resolve + "Stream", code="OK") == 1
    latency = "aicreds_vault_grpc_request_duration_seconds_count"
    assert delta(before, after, latency, method=resolve) == 4
    assert after.leaks([*CREDENTIALS, *CREDENTIALS.values()]) == []


async def test_only_the_resolve_right_opens_a_stream(tmp_path: Path) -> None:
    callers = {"router": ["resolve"], "auditor": ["admin"], "both": ["manage", "resolve"]}
    async with running_vault(tmp_path, callers) as handle:
        request = [cpb.ResolveRequest(user_id="alice", keys=cpb.KeyNames(keys=["k"]))]
        for caller in ("router", "both"):
            answers = await _on_one_stream(CredentialServiceStub(handle.channel(caller)), request)
            assert answers[100].HasField("response"), caller
        unknown = open_channel(handle.address, "not-a-caller-token")
        try:
            for stub, code in (
                (CredentialServiceStub(handle.channel("auditor")), "PERMISSION_DENIED"),
                (CredentialServiceStub(unknown), "UNAUTHENTICATED"),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await _on_one_stream(stub, request)
                assert info.value.code().name == code
        finally:
            await unknown.close()


async def test_a_caller_that_reads_no_answers_holds_back_the_requests_it_sends() -> None:
    """Answers not taken count against the bound: a caller that writes requests and never reads
    must not make the vault resolve (and keep in memory, values and all) every one of them."""
    resolved = 0

    async def resolve(request: cpb.ResolveRequest) -> cpb.ResolveResponse:
        nonlocal resolved
        resolved += 1
        return cpb.ResolveResponse(values={"k": "a secret value"})

    async def requests() -> AsyncIterator[cpb.ResolveStreamRequest]:
        for n in range(1000):
            yield cpb.ResolveStreamRequest(id=n, request=cpb.ResolveRequest(user_id="u"))

    answers = answer_resolve_stream(requests(), resolve, max_in_flight=5)
    first = await answers.__anext__()  # the stream's writer takes one answer, then is stuck
    for _ in range(200):
        await asyncio.sleep(0)
    assert resolved <= 5 + 1, "requests kept being resolved while no answer was taken"
    got = [first] + [a async for a in answers]
    assert sorted(a.id for a in got) == list(range(1000))


async def _two_requests(
    then: asyncio.Event | None = None,
) -> AsyncIterator[cpb.ResolveStreamRequest]:
    """Requests 0 and 1 (users u0 and u1); then, with `then`, the caller's side stays open
    until it is set."""
    for n in range(2):
        yield cpb.ResolveStreamRequest(id=n, request=cpb.ResolveRequest(user_id=f"u{n}"))
    if then is not None:
        await then.wait()


async def _drained(
    requests: AsyncIterator[cpb.ResolveStreamRequest], release: asyncio.Event
) -> asyncio.Future[list[cpb.ResolveStreamResponse]]:
    """The answers of a stream over `requests`, each resolved (the request's user as its model)
    once `release` is set, collected in a task: returned once the stream has read the requests
    and the vault has begun to stop (`draining`)."""
    draining = asyncio.Event()

    async def resolve(request: cpb.ResolveRequest) -> cpb.ResolveResponse:
        await release.wait()
        return cpb.ResolveResponse(upstream_model=request.user_id)

    got = asyncio.ensure_future(_all(answer_resolve_stream(requests, resolve, stop=draining)))
    for _ in range(20):
        await asyncio.sleep(0)
    draining.set()
    for _ in range(20):
        await asyncio.sleep(0)
    return got


async def test_draining_answers_what_was_read_and_ends_the_stream() -> None:
    """The vault is stopping: a stream reads no further request, answers those it read, and
    ends (OK) instead of holding the vault's shutdown for its whole grace and then being cut."""
    release = asyncio.Event()
    more = asyncio.Event()  # the caller never closes its side
    got = await _drained(_two_requests(more), release)
    assert not got.done()  # the two requests read are still being worked on
    release.set()
    ended = await asyncio.wait_for(got, 5.0)
    assert sorted(a.id for a in ended) == [0, 1]


async def test_draining_after_the_caller_closed_its_side_still_answers_everything() -> None:
    """The caller has closed its side and waits for its answers when the vault begins to stop:
    the drain has nothing left to cut short, and every request read is still answered."""
    release = asyncio.Event()
    got = await _drained(_two_requests(), release)
    release.set()
    ended = await asyncio.wait_for(got, 5.0)
    assert sorted(a.id for a in ended) == [0, 1]


async def _all(
    answers: AsyncIterator[cpb.ResolveStreamResponse],
) -> list[cpb.ResolveStreamResponse]:
    return [a async for a in answers]


async def test_a_stopping_vault_does_not_wait_out_its_grace_for_an_open_stream(
    vault: VaultHandle,
) -> None:
    stub = CredentialServiceStub(vault.channel("router"))
    call = stub.ResolveStream(None, timeout=60)
    await call.write(cpb.ResolveStreamRequest(id=1, request=REQUESTS[0]))
    assert (await call.read()).HasField("response")
    loop = asyncio.get_running_loop()
    started = loop.time()
    await vault.running.server.stop(10.0)
    assert loop.time() - started < 5.0
    assert await call.read() == grpc.aio.EOF
    assert await call.code() == grpc.StatusCode.OK
