"""The egress policy (SPEC 3.4), on the address actually connected to.

Every connection goes through `LoopbackOnlyBackend`, which connects only to 127.0.0.0/8 and
records and fails anything else without touching the network.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from services.router.egress import AllowRule, EgressPolicy, parse_ip
from services.router.errors import EgressRefused, UpstreamUnavailable
from services.router.transport import UpstreamClient, UpstreamRequest
from tests.support.fake_upstream import FakeUpstream, running_upstream
from tests.support.loopback_backend import LoopbackOnlyBackend


class StubResolver:
    """Answers from a table, and can change its answer between calls (DNS rebinding)."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.calls.append(host)
        queue = self.answers.get(host)
        if not queue:
            raise OSError("no such host")
        return queue.pop(0) if len(queue) > 1 else queue[0]


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with running_upstream() as server:
        yield server


async def _get(client: UpstreamClient, url: str) -> int:
    loop = asyncio.get_running_loop()
    request = UpstreamRequest("GET", url, [])
    async with client.stream(request, deadline=loop.time() + 5) as response:
        async for _ in response.chunks():
            pass
        return response.status


def _client(allow: str, resolver: StubResolver | None = None) -> tuple[UpstreamClient, Any]:
    backend = LoopbackOnlyBackend()
    client = UpstreamClient(
        EgressPolicy.from_setting(allow),
        resolver=resolver or StubResolver({}),
        network_backend=backend,
        connect_timeout=2,
    )
    return client, backend


async def test_loopback_is_refused_without_the_allowlist(upstream: FakeUpstream) -> None:
    client, backend = _client("")
    with pytest.raises(EgressRefused, match="loopback"):
        await _get(client, upstream.base_url + "/v1/models")
    await client.aclose()
    assert backend.connects == []
    assert upstream.requests == []


@pytest.mark.parametrize("allow", ["127.0.0.1", "127.0.0.0/8", "127.0.0.1:{port}"])
async def test_loopback_is_allowed_with_the_allowlist(upstream: FakeUpstream, allow: str) -> None:
    client, backend = _client(allow.format(port=upstream.port))
    assert await _get(client, upstream.base_url + "/v1/models") == 200
    await client.aclose()
    assert backend.connects == [("127.0.0.1", upstream.port)]
    assert [r.target for r in upstream.requests] == ["/v1/models"]


async def test_allowlisted_port_does_not_open_other_ports(upstream: FakeUpstream) -> None:
    client, backend = _client(f"127.0.0.1:{upstream.port + 1}")
    with pytest.raises(EgressRefused):
        await _get(client, upstream.base_url + "/")
    await client.aclose()
    assert backend.connects == []


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/v1",
        "http://[::1]:8080/v1",
        "http://0.0.0.0:80/",
        "http://[::ffff:10.0.0.1]/",
        "http://224.0.0.1/",
        "http://internal.example/v1",
        "http://mixed.example/v1",
    ],
)
async def test_forbidden_addresses_are_refused_before_anything_is_sent(url: str) -> None:
    resolver = StubResolver(
        {"internal.example": [["10.1.2.3"]], "mixed.example": [["93.184.216.34", "192.168.1.1"]]}
    )
    # Loopback allowed, to show it does not open ::1 or anything else.
    client, backend = _client("127.0.0.1", resolver)
    with pytest.raises(EgressRefused) as caught:
        await _get(client, url)
    await client.aclose()
    assert backend.connects == []
    assert "ROUTER_EGRESS_ALLOW" in caught.value.message


async def test_a_host_name_allowlisted_may_resolve_to_loopback(upstream: FakeUpstream) -> None:
    resolver = StubResolver({"llm.internal": [["127.0.0.1"]]})
    client, backend = _client("llm.internal", resolver)
    url = f"http://llm.internal:{upstream.port}/v1/chat"
    assert await _get(client, url) == 200
    await client.aclose()
    assert backend.connects == [("127.0.0.1", upstream.port)]
    # The upstream still sees the host name it was addressed by.
    assert upstream.requests[0].header("host") == f"llm.internal:{upstream.port}"


async def test_every_connection_is_checked_so_rebinding_is_refused() -> None:
    # The first answer is public (the test backend fails it without touching the network);
    # the next connection's answer has been rebound to the metadata address.
    resolver = StubResolver({"rebind.example": [["93.184.216.34"], ["169.254.169.254"]]})
    client, backend = _client("", resolver)
    with pytest.raises(UpstreamUnavailable):
        await _get(client, "http://rebind.example/")
    with pytest.raises(EgressRefused, match="link-local"):
        await _get(client, "http://rebind.example/")
    await client.aclose()
    assert backend.connects == [("93.184.216.34", 80)]
    assert resolver.calls == ["rebind.example", "rebind.example"]


async def test_unresolvable_host_is_unavailable() -> None:
    client, backend = _client("")
    with pytest.raises(UpstreamUnavailable, match="could not resolve the upstream nowhere"):
        await _get(client, "http://nowhere.invalid/")
    await client.aclose()
    assert backend.connects == []


@pytest.mark.parametrize(
    ("address", "category"),
    [
        ("127.0.0.1", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.0.1", "private"),
        ("192.168.0.1", "private"),
        ("169.254.169.254", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("fc00::1", "private"),
        ("ff02::1", "multicast"),
        ("100.64.0.1", "reserved"),
        ("::ffff:127.0.0.1", "loopback"),
    ],
)
def test_default_policy_refuses(address: str, category: str) -> None:
    ip = parse_ip(address)
    assert ip is not None
    why = EgressPolicy().refusal("h", ip, 443)
    assert why is not None and why.startswith(category)


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:4700::6810:85e5"])
def test_default_policy_allows_public_addresses(address: str) -> None:
    ip = parse_ip(address)
    assert ip is not None and EgressPolicy().refusal("h", ip, 443) is None


@pytest.mark.parametrize(
    ("entry", "rule"),
    [
        ("127.0.0.1", AllowRule(network=ipaddress.ip_network("127.0.0.1/32"))),
        ("10.0.0.0/8", AllowRule(network=ipaddress.ip_network("10.0.0.0/8"))),
        ("[::1]:8443", AllowRule(network=ipaddress.ip_network("::1/128"), port=8443)),
        ("Ollama.Local:11434", AllowRule(host="ollama.local", port=11434)),
    ],
)
def test_allow_entries_parse(entry: str, rule: AllowRule) -> None:
    assert AllowRule.parse(entry) == rule


@pytest.mark.parametrize("entry", ["host:0", "host:x", "10.0.0.0/33", "a b"])
def test_bad_allow_entries_are_refused(entry: str) -> None:
    with pytest.raises(ValueError, match="ROUTER_EGRESS_ALLOW"):
        AllowRule.parse(entry)
