"""The `x-error-reason` trailing metadata: written by every server, read by the router and the
gateway with one function."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest

from services.common.error_reason import ERROR_REASON_KEY, error_reason, reason_metadata
from services.common.errors import NotFound


def test_writing_and_reading_round_trip() -> None:
    assert reason_metadata("model_not_found") == (("x-error-reason", "model_not_found"),)
    assert error_reason(reason_metadata("model_not_found")) == "model_not_found"


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        (None, None),
        ((), None),
        ((("other", "x"),), None),
        ((("other", "x"), (ERROR_REASON_KEY, "provider_exists")), "provider_exists"),
        (((ERROR_REASON_KEY, "first"), (ERROR_REASON_KEY, "second")), "first"),
        (((ERROR_REASON_KEY, b"bytes_reason"),), "bytes_reason"),
        (((ERROR_REASON_KEY, b"\xffbad"),), "\ufffdbad"),
        # Disagreement found: the router's copy returned "" for an empty value (and so set an
        # empty reason on the error it re-raised); the gateway's treated it as no reason. The
        # rule: empty is no reason, the caller falls back to its default for the status.
        (((ERROR_REASON_KEY, ""),), None),
    ],
)
def test_reading(metadata: object, reason: str | None) -> None:
    assert error_reason(metadata) == reason  # type: ignore[arg-type]


def test_an_empty_reason_writes_nothing() -> None:
    assert reason_metadata("") == ()


@pytest.fixture
async def failing() -> AsyncIterator[int]:
    """A server whose one method fails as the common handlers make it fail."""

    async def fail(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        err = NotFound("model 'gpt-5' is not served", reason="model_not_found")
        context.set_trailing_metadata(reason_metadata(err.reason))
        await context.abort(grpc.StatusCode.NOT_FOUND, err.message)
        raise AssertionError("unreachable")

    handlers = {"Fail": grpc.unary_unary_rpc_method_handler(fail)}
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.T", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield port
    await server.stop(0)


async def test_the_reason_of_a_real_failed_call(failing: int) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{failing}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary("/test.T/Fail")(b"", timeout=10)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_reason(caught.value.trailing_metadata()) == "model_not_found"
