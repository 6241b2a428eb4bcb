"""Non-streamed calls: one `InvokeBuffered`, framed as before (`buffered_answer.py`)."""

from __future__ import annotations

import asyncio
import contextlib
import time

import httpx

from tests.gateway.model_api.conftest import GOOD, JSON, SSE, Gateway
from tests.gateway.support.stub_backends import RouterScript
from tests.support.fake_upstream import openai_events

# -- non-streamed calls: one InvokeBuffered ---------------------------------------------------


def _post_chat(gw: Gateway, body: dict[str, object]) -> httpx.Response:
    return httpx.post(
        f"{gw.openai_url}/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {GOOD}"},
        timeout=10,
    )


def test_only_streamed_calls_use_the_streaming_invoke(gw: Gateway) -> None:
    gw.router.script = RouterScript(headers=JSON, chunks=[b"{}"])
    for stream in (None, False, "true", True):
        body: dict[str, object] = {"model": "gpt-4"}
        if stream is not None:
            body["stream"] = stream
        assert _post_chat(gw, body).status_code == 200
    assert gw.router.rpcs == ["InvokeBuffered"] * 3 + ["Invoke"]
    assert gw.router.max_body_bytes == [0, 0, 0]  # the router's own limit


def test_a_buffered_answer_is_framed_as_a_collected_one(gw: Gateway) -> None:
    gw.router.script = RouterScript(
        status=201,
        headers=[*JSON, ("x-request-id", "up-1"), ("content-length", "99"), ("date", "x")],
        chunks=[b'{"a":', b" 1}"],
        initial_warnings=["malformed placeholder"],
        trailing_warnings=["Credential not found: org", "malformed placeholder"],
    )
    response = _post_chat(gw, {"model": "gpt-4"})
    assert response.status_code == 201
    assert response.content == b'{"a": 1}'
    # Besides the gateway's own: its `x-request-id` (the middleware's), date and server.
    ours = ("date", "server", "x-request-id")
    assert [(k, v) for k, v in response.headers.multi_items() if k not in ours] == [
        ("content-type", "application/json"),
        ("x-upstream-request-id", "up-1"),
        ("x-ratelimit-limit", "40"),
        ("x-credential-warning", "malformed placeholder"),
        ("x-credential-warning", "Credential not found: org"),
        ("content-length", "8"),
    ]


def test_an_event_stream_nobody_asked_for_is_sent_as_an_event_stream(gw: Gateway) -> None:
    gw.router.script = RouterScript(headers=SSE, chunks=openai_events("gpt-4"))
    response = _post_chat(gw, {"model": "gpt-4"})
    assert response.content == b"".join(openai_events("gpt-4"))
    assert "content-length" not in response.headers
    assert response.headers["transfer-encoding"] == "chunked"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"


def test_an_answer_over_8_mib_is_sent_without_a_length(gw: Gateway) -> None:
    eight_mib = 8 * 1024 * 1024
    for size, chunked in ((eight_mib, False), (eight_mib + 1, True)):
        gw.router.script = RouterScript(
            headers=JSON, chunks=[b"x" * size], trailing_warnings=["Credential not found: k"]
        )
        response = _post_chat(gw, {"model": "gpt-4"})
        assert len(response.content) == size
        assert ("content-length" not in response.headers) is chunked
        assert response.headers.get("transfer-encoding") == ("chunked" if chunked else None)
        assert response.headers["x-credential-warning"] == "Credential not found: k"


def test_client_disconnect_before_a_buffered_answer_cancels_the_router_call(gw: Gateway) -> None:
    gw.router.script = RouterScript(headers=JSON, chunks=[b"{}"], hold_after_first_chunk=True)

    async def leave_early() -> float:
        async with httpx.AsyncClient() as client:
            request = client.post(
                f"{gw.openai_url}/chat/completions",
                json={"model": "gpt-4"},
                headers={"Authorization": f"Bearer {GOOD}"},
            )
            task = gw.loop.loop.create_task(request)
            while not gw.router.requests:
                await asyncio.sleep(0.01)
            task.cancel()
            closed_at = time.monotonic()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return closed_at

    closed_at = gw.loop.run(leave_early())
    assert gw.router.cancelled.wait(1.0), "the router call was not cancelled"
    assert gw.router.cancelled_at is not None and gw.router.cancelled_at - closed_at < 1.0
