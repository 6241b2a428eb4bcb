"""Balanced channels (`open_channel`): calls spread over every address of the target, retried on
UNAVAILABLE only where `grpc_service_config.RETRIED` allows, never for a model call."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import grpc.aio
import pytest

from services.common.grpc_server import CallerChannel, channel_target, open_channel
from services.common.grpc_service_config import RETRIED, proto_methods, service_config
from tests.support.grpc_replicas import Failure, Replica, never, start_replica, target

TOKEN = "tok-gateway"
GET_CREDENTIALS = "/aicreds.vault.v1.CredentialService/GetCredentials"
CREATE_PROVIDER = "/aicreds.vault.v1.ProviderService/CreateProvider"
CHECK_UPSTREAM = "/aicreds.router.v1.RouterService/CheckUpstream"
INVOKE = "/aicreds.router.v1.RouterService/Invoke"
INVOKE_BUFFERED = "/aicreds.router.v1.RouterService/InvokeBuffered"


@pytest.fixture
async def replicas() -> AsyncIterator[Callable[..., Awaitable[Replica]]]:
    """Starts replicas of the methods above; `fails` as `start_replica`'s."""
    started: list[Replica] = []

    async def start(fails: Failure = never) -> Replica:
        unary = (GET_CREDENTIALS, CREATE_PROVIDER, CHECK_UPSTREAM, INVOKE_BUFFERED)
        started.append(await start_replica(unary, (INVOKE,), fails=fails))
        return started[-1]

    yield start
    for replica in started:
        await replica.server.stop(0)


async def _call(channel: CallerChannel, method: str) -> grpc.StatusCode:
    try:
        if method == INVOKE:
            async for _ in channel.unary_stream(method)(b"", timeout=5):
                pass
        else:
            await channel.unary_unary(method)(b"", timeout=5)
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


async def _reach_all(channel: CallerChannel, *replicas: Replica) -> None:
    """Call until every replica has answered (round robin adds each as it connects), then
    forget what they counted."""
    for _ in range(200):
        if all(replica.seen[GET_CREDENTIALS] for replica in replicas):
            break
        assert await _call(channel, GET_CREDENTIALS) == grpc.StatusCode.OK
    for replica in replicas:
        assert replica.seen[GET_CREDENTIALS], "a replica was never reached"
        replica.seen.clear()


# -- the table and the target ----------------------------------------------------------------------


def test_every_rpc_of_the_protos_is_decided_once() -> None:
    decided = {service: sorted(methods) for service, methods in RETRIED.items()}
    assert decided == {service: sorted(methods) for service, methods in proto_methods().items()}


def test_model_calls_and_second_secrets_are_never_retried() -> None:
    router = RETRIED["aicreds.router.v1.RouterService"]
    auth = RETRIED["aicreds.vault.v1.AuthService"]
    assert not router["Invoke"] and not router["InvokeBuffered"] and not router["CheckProvider"]
    assert not auth["CreateToken"] and not auth["CreateSession"]
    assert RETRIED["aicreds.vault.v1.CredentialService"]["Resolve"]
    # Usage counts add up: a retry after a lost answer would count a call twice.
    assert not RETRIED["aicreds.vault.v1.UsageService"]["RecordUsage"]
    config = service_config()
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    (method_config,) = config["methodConfig"]
    assert method_config["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    named = {(name["service"], name["method"]) for name in method_config["name"]}
    assert ("aicreds.router.v1.RouterService", "Invoke") not in named
    assert ("aicreds.vault.v1.CredentialService", "Resolve") in named


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("aicreds-vault:50051", "dns:///aicreds-vault:50051"),
        ("127.0.0.1:5001", "dns:///127.0.0.1:5001"),
        ("[::1]:5001", "dns:///[::1]:5001"),
        ("dns:///router:50052", "dns:///router:50052"),
        ("ipv4:127.0.0.1:5001,127.0.0.1:5002", "ipv4:127.0.0.1:5001,127.0.0.1:5002"),
        ("ipv6:[::1]:5001", "ipv6:[::1]:5001"),
        ("unix:/run/vault.sock", "unix:/run/vault.sock"),
    ],
)
def test_a_bare_address_is_resolved_through_dns(address: str, expected: str) -> None:
    assert channel_target(address) == expected


# -- round robin -----------------------------------------------------------------------------------


async def test_calls_alternate_between_every_address(
    replicas: Callable[..., Awaitable[Replica]],
) -> None:
    a, b, c = await replicas(), await replicas(), await replicas()
    async with open_channel(target(a, b, c), TOKEN) as channel:
        await _reach_all(channel, a, b, c)
        for _ in range(30):
            assert await _call(channel, GET_CREDENTIALS) == grpc.StatusCode.OK
    assert [a.seen[GET_CREDENTIALS], b.seen[GET_CREDENTIALS], c.seen[GET_CREDENTIALS]] == [10] * 3


async def test_calls_keep_succeeding_on_the_survivor_when_a_replica_stops(
    replicas: Callable[..., Awaitable[Replica]],
) -> None:
    a, b = await replicas(), await replicas()
    async with open_channel(target(a, b), TOKEN) as channel:
        await _reach_all(channel, a, b)
        await a.server.stop(0)
        outcomes = Counter([await _call(channel, GET_CREDENTIALS) for _ in range(20)])
    assert outcomes == {grpc.StatusCode.OK: 20}
    assert b.seen[GET_CREDENTIALS] == 20


async def test_unavailable_is_retried_on_another_replica_only_where_safe(
    replicas: Callable[..., Awaitable[Replica]],
) -> None:
    # Once both are connected, one replica answers UNAVAILABLE to everything (its database went
    # away, say).
    failing = False
    bad, good = await replicas(lambda method, attempt: failing), await replicas()
    async with open_channel(target(bad, good), TOKEN) as channel:
        await _reach_all(channel, bad, good)
        failing = True
        reads = Counter([await _call(channel, GET_CREDENTIALS) for _ in range(10)])
        creates = Counter([await _call(channel, CREATE_PROVIDER) for _ in range(10)])
    # A read that landed on the bad replica was tried again on the good one: no failure.
    assert reads == {grpc.StatusCode.OK: 10}
    assert good.seen[GET_CREDENTIALS] == 10 and bad.seen[GET_CREDENTIALS] >= 1
    # CreateProvider is not retried: every attempt the bad replica took is a failure the caller
    # saw (a retry could have answered ALREADY_EXISTS for a provider the first attempt made).
    assert creates[grpc.StatusCode.UNAVAILABLE] == bad.seen[CREATE_PROVIDER] >= 1
    assert creates[grpc.StatusCode.OK] == good.seen[CREATE_PROVIDER]
    assert bad.seen[CREATE_PROVIDER] + good.seen[CREATE_PROVIDER] == 10


@pytest.mark.parametrize("method", [INVOKE, INVOKE_BUFFERED])
async def test_a_model_call_is_never_retried(
    replicas: Callable[..., Awaitable[Replica]], method: str
) -> None:
    router = await replicas(lambda name, attempt: attempt == 1)
    async with open_channel(router.address, TOKEN) as channel:
        assert await _call(channel, method) == grpc.StatusCode.UNAVAILABLE
        # The same failure on a call that is safe to retry is retried and succeeds.
        assert await _call(channel, CHECK_UPSTREAM) == grpc.StatusCode.OK
    assert router.seen[method] == 1
    assert router.seen[CHECK_UPSTREAM] == 2
