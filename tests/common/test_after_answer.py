"""`after_answer`: a call's reports wait until its answer is on its way, in its context."""

from __future__ import annotations

import asyncio
import logging

import pytest

from services.common.after_answer import after_answer, answered, defer_until_answered
from services.common.request_context import bind_request_id, current_request_id

SECRET = "sk-after-answer-secret-0123456789"


async def test_outside_a_call_work_runs_at_once() -> None:
    done: list[str] = []
    after_answer(done.append, "reported")
    assert done == ["reported"]


async def test_a_calls_reports_run_after_the_writer_took_its_answer_in_its_context() -> None:
    """As on the streams: the call puts its answer in a queue that a writer task waits on; what
    the call reported before and after that runs once the writer's step is over."""
    events: list[str] = []
    answers: asyncio.Queue[str] = asyncio.Queue()

    async def writer() -> None:
        events.append(f"wrote {await answers.get()}")

    async def call() -> None:
        deferred = defer_until_answered()
        bind_request_id("req-7")
        after_answer(lambda: events.append(f"upstream line of {current_request_id()}"))
        answers.put_nowait("answer")
        after_answer(lambda: events.append(f"access line of {current_request_id()}"))
        answered(deferred)
        events.append("call returned")
        after_answer(events.append, "after answered: at once")

    writing = asyncio.ensure_future(writer())
    await asyncio.sleep(0)  # the writer waits on the queue, as the stream's does
    await asyncio.ensure_future(call())
    await writing
    await asyncio.sleep(0)
    assert events == [
        "call returned",
        "after answered: at once",
        "wrote answer",
        "upstream line of req-7",
        "access line of req-7",
    ]


async def test_each_call_defers_only_its_own_reports() -> None:
    events: list[str] = []
    first_deferring = asyncio.Event()
    release = asyncio.Event()

    async def deferring_call() -> None:
        deferred = defer_until_answered()
        after_answer(events.append, "deferred call")
        first_deferring.set()
        await release.wait()
        answered(deferred)

    async def plain_call() -> None:
        await first_deferring.wait()
        after_answer(events.append, "plain call")  # a task of its own: not deferred
        release.set()

    await asyncio.gather(deferring_call(), plain_call())
    await asyncio.sleep(0)
    assert events == ["plain call", "deferred call"]


async def test_a_failing_report_is_logged_by_its_type_only_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    events: list[str] = []

    def failing() -> None:
        raise ValueError(f"bad value {SECRET}")

    async def call() -> None:
        deferred = defer_until_answered()
        after_answer(failing)
        after_answer(events.append, "still reported")
        answered(deferred)

    await asyncio.ensure_future(call())
    await asyncio.sleep(0)
    assert events == ["still reported"]
    failures = [r for r in caplog.records if r.getMessage() == "reporting a call failed"]
    assert len(failures) == 1
    assert failures[0].levelno == logging.ERROR
    assert failures[0].__dict__["fields"] == {"error": "ValueError"}
    assert SECRET not in caplog.text
