"""The router never logs a query: neither a (legacy) base URL's nor the call's, on success or
when the upstream cannot be reached, and no error text carries it."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import grpc.aio
from aicreds.router.v1 import router_pb2

from tests.router.conftest import RouterEnv, provider
from tests.router.fake_vault import FakeVault
from tests.support.fake_upstream import FakeUpstream

BASE_SECRET = "sk-live-BASEQUERY-0123456789"
CALL_SECRET = "sk-live-CALLQUERY-0123456789"


async def test_no_query_in_logs_or_errors(
    fake_vault: FakeVault,
    fake_env: RouterEnv,
    upstream: FakeUpstream,
    all_logs: Callable[[], str],
) -> None:
    fake_vault.providers["u"] = [
        provider("p", f"{upstream.base_url}/v1?key={BASE_SECRET}", {}),
        provider("gone", f"http://127.0.0.1:9/v1?key={BASE_SECRET}", {}),
    ]
    request = router_pb2.InvokeRequest(
        user_id="u", provider_name="p", method="POST", path="/x", query=f"sig={CALL_SECRET}"
    )
    answer = await fake_env.invoke(request)
    assert answer.status == 200
    (seen,) = upstream.requests
    assert BASE_SECRET in seen.target and CALL_SECRET in seen.target  # sent, as configured
    request.provider_name = "gone"
    try:
        await fake_env.invoke(request)
    except grpc.aio.AioRpcError as err:
        details = err.details() or ""
    else:
        raise AssertionError("an unreachable upstream answered")
    logs = all_logs()
    for secret in (BASE_SECRET, CALL_SECRET):
        assert secret not in logs and secret not in details
