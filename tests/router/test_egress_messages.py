"""What an egress refusal tells a caller: the host and the category of address, never the
address a name resolved to (an internal-DNS oracle otherwise). The address is in the router's
own log line, for operators. `fec0::/10` (deprecated site-local) is refused like private."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable

import grpc
import grpc.aio
import pytest
from aicreds.router.v1 import router_pb2

from services.router.egress import EgressPolicy, refused_category
from services.router.errors import EgressRefused
from tests.router.conftest import RouterEnv, RouterFactory, provider
from tests.router.fake_vault import FakeVault

INTERNAL = "api.internal.test"  # the router tests' stub DNS answers 10.20.30.40
ADDRESS = "10.20.30.40"


@pytest.mark.parametrize(
    ("address", "category"),
    [
        ("10.1.2.3", "private"),
        ("192.168.0.7", "private"),
        ("169.254.169.254", "link-local"),
        ("127.0.0.5", "loopback"),
        ("fd00::5", "private"),
        ("fec0::1", "site-local"),
        ("fefe:1::2", "site-local"),
        ("::ffff:10.1.2.3", "private"),
    ],
)
def test_a_name_refusal_names_the_category_not_the_address(
    address: str, category: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with pytest.raises(EgressRefused) as caught:
        EgressPolicy().check("llm.corp.example", [address], 443)
    message = caught.value.message
    assert "llm.corp.example" in message and f"resolves to a {category}" in message
    assert address not in message and str(ipaddress.ip_address(address)) not in message
    # Operators see the address in the router's log.
    (record,) = [r for r in caplog.records if r.getMessage() == "egress refused"]
    assert record.fields["address"] == str(ipaddress.ip_address(address))  # type: ignore[attr-defined]


def test_site_local_is_refused_by_default_and_allowlistable() -> None:
    site_local = ipaddress.ip_address("fec0::1")
    assert refused_category(site_local) == "site-local"
    assert EgressPolicy.from_setting("fec0::/10").refusal("h", site_local, 443) is None


def test_an_address_literal_is_still_named() -> None:
    with pytest.raises(EgressRefused) as caught:
        EgressPolicy().check("10.0.0.1", ["10.0.0.1"], 80)
    assert "10.0.0.1 port 80 is a private address" in caught.value.message


@pytest.fixture
async def strict_env(fake_vault: FakeVault, router_factory: RouterFactory) -> RouterEnv:
    return await router_factory(fake_vault.address, fake_vault.token, egress_allow="")


async def test_check_upstream_reason_has_no_address(strict_env: RouterEnv) -> None:
    reply: router_pb2.CheckUpstreamResponse = await strict_env.stub().CheckUpstream(
        router_pb2.CheckUpstreamRequest(base_url=f"https://{INTERNAL}/v1"), timeout=5
    )
    assert not reply.allowed
    assert INTERNAL in reply.reason and "private address" in reply.reason
    assert ADDRESS not in reply.reason


async def test_invoke_error_has_no_address(
    fake_vault: FakeVault, strict_env: RouterEnv, all_logs: Callable[[], str]
) -> None:
    fake_vault.providers["u"] = [provider("p", f"https://{INTERNAL}/v1", {})]
    request = router_pb2.InvokeRequest(user_id="u", provider_name="p", method="POST", path="/x")
    buffered = router_pb2.InvokeBufferedRequest(call=request)
    for call in (strict_env.invoke(request), strict_env.stub().InvokeBuffered(buffered, timeout=5)):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert ADDRESS not in (caught.value.details() or "")
        assert "private address" in (caught.value.details() or "")
    assert ADDRESS in all_logs()  # the operator's log keeps it
