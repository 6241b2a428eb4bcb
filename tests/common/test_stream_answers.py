"""`stream_answers`: what the vault's and the router's stream loops share (a request's id and
answer, the reader, the drain watcher, the end)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import grpc
import pytest

from services.common.after_answer import after_answer
from services.common.request_context import bind_request_id, current_request_id
from services.common.stream_answers import END, MAX_REQUEST_ID, StreamAnswers, begin_request


async def test_each_request_binds_its_own_bounded_id_or_a_new_one() -> None:
    bind_request_id("the-streams-own")
    seen: dict[str, str] = {}
    both_bound = asyncio.Barrier(3)

    async def request(name: str, request_id: str) -> None:
        begin_request(request_id)
        await both_bound.wait()  # the other request has bound its id by now
        seen[name] = current_request_id()

    long_id = "r" * (MAX_REQUEST_ID + 50)
    tasks = [
        asyncio.ensure_future(request("long", long_id)),
        asyncio.ensure_future(request("empty", "")),
    ]
    await both_bound.wait()
    await asyncio.gather(*tasks)
    assert seen["long"] == "r" * MAX_REQUEST_ID
    assert len(seen["empty"]) == 32 and seen["empty"] != seen["long"]
    assert current_request_id() == "the-streams-own"  # each task bound its id in its own copy


async def test_a_requests_reports_run_after_the_writer_took_its_answer() -> None:
    stream: StreamAnswers[str] = StreamAnswers(max_in_flight=1)
    events: list[str] = []

    async def writer() -> None:
        events.append(f"wrote {await stream.answers.get()}")

    async def request() -> None:
        request = begin_request("req-9")
        after_answer(lambda: events.append(f"reported {current_request_id()}"))
        stream.answer("answer", "/svc/Method", grpc.StatusCode.OK, request)
        events.append("request returned")

    writing = asyncio.ensure_future(writer())
    await asyncio.sleep(0)  # the writer waits on the queue, as a stream's does
    await asyncio.ensure_future(request())
    await writing
    await asyncio.sleep(0)
    assert events == ["request returned", "wrote answer", "reported req-9"]


async def test_the_reader_queues_the_end_after_its_answers_and_its_error_reaches_the_writer() -> (
    None
):
    stream: StreamAnswers[str] = StreamAnswers(max_in_flight=1)

    async def read() -> None:
        stream.answers.put_nowait("first")
        raise ValueError("the caller's side broke")

    reader = stream.start(read, None, lambda: None)
    assert await stream.answers.get() == "first"
    assert await stream.answers.get() is END
    with pytest.raises(ValueError):
        await reader
    stream.close(())


async def test_stop_drains_while_reading_but_not_once_the_reader_ended() -> None:
    drains: list[str] = []
    go_on = asyncio.Event()

    async def read() -> None:
        await go_on.wait()

    reading, stop_reading = StreamAnswers[str](1), asyncio.Event()
    reading.start(read, stop_reading, lambda: drains.append("while reading"))
    ended, stop_ended = StreamAnswers[str](1), asyncio.Event()
    reader = ended.start(lambda: asyncio.sleep(0), stop_ended, lambda: drains.append("ended"))
    await reader

    stop_reading.set()
    stop_ended.set()
    for _ in range(3):
        await asyncio.sleep(0)
    assert drains == ["while reading"]
    go_on.set()
    reading.close(())
    ended.close(())


async def test_closing_cancels_the_reader_the_watcher_and_the_requests_in_flight() -> None:
    stream: StreamAnswers[str] = StreamAnswers(max_in_flight=2)
    request = asyncio.ensure_future(asyncio.Event().wait())

    reader = stream.start(lambda: asyncio.Event().wait(), asyncio.Event(), lambda: None)
    await asyncio.sleep(0)
    stream.close([request])
    await asyncio.gather(reader, request, return_exceptions=True)
    assert reader.cancelled() and request.cancelled()
    assert await stream.answers.get() is END  # the reader still ends the queue
    await asyncio.sleep(0)
    assert asyncio.all_tasks() == {asyncio.current_task()}  # no watcher left waiting


async def test_a_stream_closed_before_its_reader_ran_never_reads() -> None:
    """The router's writer yields `takes_streamed` before its reader first runs: a caller gone
    at once closes the stream then, and nothing reads the caller's requests any more."""
    stream: StreamAnswers[str] = StreamAnswers(max_in_flight=1)
    calls: list[str] = []

    def read() -> Awaitable[object]:
        calls.append("read")
        return asyncio.Event().wait()

    reader = stream.start(read, None, lambda: None)
    stream.close(())
    await asyncio.gather(reader, return_exceptions=True)
    assert reader.cancelled()
    assert calls == []


async def test_closing_a_stream_whose_stop_was_never_set_does_not_drain() -> None:
    """Closing cancels the watcher, which then ends too: that is no stop. A drain then (the
    vault's cancels its reader again) would cut short the reader's own clean-up."""
    stream: StreamAnswers[str] = StreamAnswers(max_in_flight=1)
    drains: list[str] = []
    cleaned: list[str] = []

    async def read() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0)  # a clean-up that takes a step (the request iterator's)
            cleaned.append("done")

    reader = stream.start(read, asyncio.Event(), lambda: drains.append("drain"))
    await asyncio.sleep(0)
    stream.close(())
    await asyncio.gather(reader, return_exceptions=True)
    for _ in range(3):
        await asyncio.sleep(0)
    assert drains == []
    assert cleaned == ["done"]
