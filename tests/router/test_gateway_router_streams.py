"""The gateway's `RouterStreams` against a router that never answers, and the credit rule the
gateway and the router share:

- `aclose` ends a stream that was retired (replaced once it was too old) while a call was still
  waiting on it, so that call fails at once instead of waiting for its deadline;
- the gateway credits a streamed call's body before the router's window is used up (else the
  router would wait for credit the gateway waits to give: the call would hang).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import grpc.aio
from aicreds.router.v1 import router_pb2 as pb

from services.gateway.router_streams import CREDIT_AT
from services.router.buffered_stream import STREAM_WINDOW
from tests.router.invoke_requests import invoke_request, router_server, serving, status_of_call


async def _never_answer(
    requests: AsyncIterator[pb.InvokeBufferedStreamRequest], context: grpc.aio.ServicerContext
) -> AsyncIterator[pb.InvokeBufferedStreamResponse]:
    await context.send_initial_metadata(())
    async for _ in requests:
        pass
    await asyncio.sleep(3600)
    yield pb.InvokeBufferedStreamResponse()  # never reached: makes this a generator


async def test_closing_ends_a_retired_stream_whose_call_still_waits() -> None:
    server, port = router_server(
        {
            "InvokeBufferedStream": grpc.stream_stream_rpc_method_handler(
                _never_answer,
                pb.InvokeBufferedStreamRequest.FromString,
                pb.InvokeBufferedStreamResponse.SerializeToString,
            )
        }
    )
    request = pb.InvokeBufferedRequest(call=invoke_request())
    async with serving(server, port, streams=1, max_age=0.2) as streams:
        waiting = streams.start(request, 30)
        assert waiting is not None
        old = streams._streams[0]
        await asyncio.sleep(0.3)
        newer = streams.start(request, 30)  # the old stream is too old: a new one, it retires
        assert newer is not None and streams._streams[0] is not old
        await asyncio.sleep(0.1)
        assert old is not None and not old.ended  # still waiting for its call's answer
        await asyncio.wait_for(streams.aclose(), timeout=5)
        assert old.ended
        # Both calls fail now, not after their 30 s.
        ending = asyncio.gather(status_of_call(waiting), status_of_call(newer))
        codes = await asyncio.wait_for(ending, timeout=5)
        assert set(codes) <= {grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE}


def test_the_gateway_credits_before_the_routers_window_is_used_up() -> None:
    assert 0 < CREDIT_AT < STREAM_WINDOW
