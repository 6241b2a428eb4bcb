"""The router's method and header-name checks match the whole text (a trailing newline passed a
`$`-anchored `match`), and a credential value the transport cannot send (stored before the
write rule refused edge whitespace) fails the call with a fixed message: no upstream library's
exception text, which would hold the value, reaches the caller or a log line."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import grpc.aio
import httpcore
import pytest
from aicreds.router.v1 import router_pb2

from services.router.errors import BadInvokeRequest, UpstreamUnavailable
from services.router.headers import check_header, upstream_request_headers
from services.router.transport.errors import exchange_errors
from tests.router.conftest import RouterEnv, provider
from tests.router.fake_vault import FakeVault
from tests.support.fake_upstream import FakeUpstream

USER = "user-1"
SECRET = "sk-live-EDGEWHITESPACE-0123456789"


@pytest.mark.parametrize("name", ["X-A\n", "X-A\r\n", "\nX-A", "X-A\x00"])
def test_header_names_with_line_endings_are_refused(name: str) -> None:
    with pytest.raises(BadInvokeRequest):
        check_header(name, "v")
    with pytest.raises(BadInvokeRequest):
        upstream_request_headers([(name, "v")], [])


def _setup(vault: FakeVault, upstream: FakeUpstream, value: str) -> None:
    vault.providers[USER] = [
        provider(
            "p",
            upstream.base_url + "/v1",
            {"Authorization": ["Bearer {{credential:k}}"]},
        )
    ]
    vault.credentials[USER] = {"k": value}


@pytest.mark.parametrize("method", ["POST\n", "GET\n", "POST\r\n"])
async def test_a_method_with_a_trailing_newline_is_refused(
    fake_vault: FakeVault, fake_env: RouterEnv, upstream: FakeUpstream, method: str
) -> None:
    _setup(fake_vault, upstream, SECRET)
    request = router_pb2.InvokeRequest(
        user_id=USER, provider_name="p", method=method, path="/chat", body=b"{}"
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await fake_env.invoke(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "method" in (caught.value.details() or "")
    assert upstream.requests == []


@pytest.mark.parametrize("value", [SECRET + " ", SECRET + "\t", SECRET + " \t "])
async def test_a_value_the_transport_refuses_leaves_no_trace_of_itself(
    fake_vault: FakeVault,
    fake_env: RouterEnv,
    upstream: FakeUpstream,
    all_logs: Callable[[], str],
    value: str,
) -> None:
    _setup(fake_vault, upstream, value)
    request = router_pb2.InvokeRequest(
        user_id=USER, provider_name="p", method="POST", path="/chat", body=b"{}"
    )
    try:
        answer = await fake_env.invoke(request)
    except grpc.aio.AioRpcError as err:
        shown = f"{err.details()} {err.debug_error_string()} {err.trailing_metadata()}"
    else:  # the transport may send it: then the upstream saw it as the header it is
        shown = repr(answer)
    assert "EDGEWHITESPACE" not in shown
    assert "EDGEWHITESPACE" not in all_logs()


@pytest.mark.parametrize(
    "error",
    [
        httpcore.LocalProtocolError(f"Illegal header value b'Bearer {SECRET} '"),
        httpcore.RemoteProtocolError(f"bad header b'{SECRET}'"),
        httpcore.ProtocolError(f"{SECRET}"),
        httpcore.WriteError(f"{SECRET}"),
        httpcore.ConnectError(f"{SECRET}"),
        httpcore.ReadTimeout(f"{SECRET}"),
    ],
)
def test_every_transport_error_becomes_a_fixed_message(error: Exception) -> None:
    with pytest.raises(Exception) as caught:
        with exchange_errors(
            "http://api.example.com/v1/x?key=" + SECRET, connect_timeout=1, deadline_left=5
        ):
            raise error
    assert isinstance(caught.value, UpstreamUnavailable) or "Timeout" in type(caught.value).__name__
    assert SECRET not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_service_logging_holds_http_library_traces_at_warning() -> None:
    import logging

    from services.common.logging import configure_logging

    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        configure_logging("router", "DEBUG")
        for name in ("httpcore", "httpcore.http11", "httpx", "h11"):
            assert not logging.getLogger(name).isEnabledFor(logging.DEBUG), name
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        for name in ("httpcore", "httpx", "h11"):
            logging.getLogger(name).setLevel(logging.NOTSET)
