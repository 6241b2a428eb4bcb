"""`CheckUpstream` (SPEC 2.3 via 3.4): the egress policy's answer for a base URL, nothing sent.

Every router here resolves with the conftest's stub table and connects through
`LoopbackOnlyBackend`, so no test sends traffic outside 127.0.0.0/8; the checks must not even
connect to loopback.
"""

from __future__ import annotations

import grpc
import grpc.aio
import pytest
from aicreds.router.v1 import router_pb2

from tests.router.conftest import RouterEnv, RouterFactory
from tests.router.fake_vault import FakeVault


async def _check(
    env: RouterEnv, base_url: str, caller: str = "gateway"
) -> router_pb2.CheckUpstreamResponse:
    reply: router_pb2.CheckUpstreamResponse = await env.stub(caller).CheckUpstream(
        router_pb2.CheckUpstreamRequest(base_url=base_url), timeout=5
    )
    return reply


def _nothing_sent(env: RouterEnv) -> None:
    assert env.backend.connects == []
    assert env.upstream.requests == []


@pytest.fixture
async def strict_env(fake_vault: FakeVault, router_factory: RouterFactory) -> RouterEnv:
    """A router with the default policy: no allowlist at all."""
    return await router_factory(fake_vault.address, fake_vault.token, egress_allow="")


async def test_loopback_is_refused_without_the_allowlist(strict_env: RouterEnv) -> None:
    reply = await _check(strict_env, f"{strict_env.upstream.base_url}/v1")
    assert not reply.allowed
    assert "127.0.0.1" in reply.reason and "loopback" in reply.reason
    assert "ROUTER_EGRESS_ALLOW" in reply.reason
    _nothing_sent(strict_env)


async def test_loopback_is_allowed_with_the_allowlist(fake_env: RouterEnv) -> None:
    # fake_env runs with ROUTER_EGRESS_ALLOW=127.0.0.1.
    reply = await _check(fake_env, f"{fake_env.upstream.base_url}/v1")
    assert (reply.allowed, reply.reason, reply.resolved) == (True, "", True)
    _nothing_sent(fake_env)


@pytest.mark.parametrize(
    ("base_url", "host", "category"),
    [
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254", "link-local"),
        ("http://10.0.0.1/v1", "10.0.0.1", "private"),
        ("http://[::1]:8080/v1", "::1", "loopback"),
        ("http://0.0.0.0/", "0.0.0.0", "unspecified"),
        ("https://api.internal.test/v1", "api.internal.test", "private"),
    ],
)
async def test_forbidden_upstreams_are_refused(
    fake_env: RouterEnv, base_url: str, host: str, category: str
) -> None:
    # 127.0.0.1 is allowlisted, which opens neither ::1 nor anything else.
    reply = await _check(fake_env, base_url)
    assert not reply.allowed
    assert host in reply.reason and category in reply.reason
    _nothing_sent(fake_env)


async def test_an_allowlisted_port_does_not_open_the_default_port(
    fake_vault: FakeVault, router_factory: RouterFactory
) -> None:
    env = await router_factory(fake_vault.address, fake_vault.token, egress_allow="127.0.0.1:8443")
    assert (await _check(env, "https://127.0.0.1:8443/v1")).allowed
    refused = await _check(env, "https://127.0.0.1/v1")
    assert not refused.allowed and "port 443" in refused.reason
    _nothing_sent(env)


async def test_a_public_host_is_allowed(fake_env: RouterEnv) -> None:
    reply = await _check(fake_env, "https://public.test/v1")
    assert (reply.allowed, reply.resolved) == (True, True)
    _nothing_sent(fake_env)


async def test_a_name_that_does_not_resolve_is_allowed_but_says_so(fake_env: RouterEnv) -> None:
    reply = await _check(fake_env, "https://nowhere.test/v1")
    assert (reply.allowed, reply.resolved, reply.reason) == (True, False, "")
    _nothing_sent(fake_env)


@pytest.mark.parametrize(
    "base_url", ["", "ftp://example.com", "http://", "/v1/chat", "http://[::1"]
)
async def test_a_base_url_without_an_http_host_is_invalid(
    fake_env: RouterEnv, base_url: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _check(fake_env, base_url)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    _nothing_sent(fake_env)


@pytest.mark.parametrize(
    ("caller", "code"),
    [("stranger", grpc.StatusCode.UNAUTHENTICATED), ("manager", grpc.StatusCode.PERMISSION_DENIED)],
)
async def test_it_needs_the_invoke_right(
    fake_env: RouterEnv, caller: str, code: grpc.StatusCode
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _check(fake_env, "https://public.test/v1", caller=caller)
    assert caught.value.code() == code
