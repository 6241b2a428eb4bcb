"""Relaying the router's stream (`stream_relay.py`): a client going away cancels the call."""

from __future__ import annotations

import time

from tests.gateway.model_api.conftest import SSE, Gateway, openai_client
from tests.gateway.support.stub_backends import RouterScript
from tests.support.fake_upstream import openai_events

# -- disconnects ---------------------------------------------------------------------------


def test_client_disconnect_mid_stream_cancels_the_router_call(gw: Gateway) -> None:
    gw.router.script = RouterScript(
        headers=SSE, chunks=openai_events("gpt-4"), hold_after_first_chunk=True
    )
    client = openai_client(gw)
    stream = client.chat.completions.create(model="gpt-4", messages=[], stream=True)
    next(iter(stream))
    closed_at = time.monotonic()
    stream.close()
    client.close()
    assert gw.router.cancelled.wait(1.0), "the router call was not cancelled"
    assert gw.router.cancelled_at is not None and gw.router.cancelled_at - closed_at < 1.0
