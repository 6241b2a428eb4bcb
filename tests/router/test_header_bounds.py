"""Header amplification (issue 14, item 1; SPEC 3.5): substituted headers are bounded while
they are built, a call over a bound fails before anything is sent, and the router stays up."""

from __future__ import annotations

import tracemalloc

import grpc
import grpc.aio
import pytest
from aicreds.router.v1 import router_pb2

from services.common.header_bounds import (
    HeaderBounds,
    headers_problem,
    substituted_size,
)
from services.router.config import RouterSettings
from services.router.errors import HeaderTooLarge
from services.router.placeholders import substitute_headers
from tests.router.conftest import RouterEnv, provider
from tests.router.fake_vault import FakeVault
from tests.support.fake_upstream import FakeUpstream

USER = "user-1"
BIG = "sk-amplify-" + "x" * (16 * 1024 - 11)  # a 16 KiB credential, the largest allowed
MIB = 1024 * 1024


def test_substitution_stops_before_building_a_16_mib_value() -> None:
    template = "{{credential:big}}" * 1000  # 18 KB of template, 16 MiB once substituted
    tracemalloc.start()
    try:
        with pytest.raises(HeaderTooLarge) as caught:
            substitute_headers([("X-Amplified", [template])], {"big": BIG}, bounds=HeaderBounds())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * MIB  # nothing near 16 MiB was ever built
    assert "'X-Amplified'" in caught.value.message
    assert "32768 bytes" in caught.value.message
    assert "sk-amplify" not in caught.value.message
    assert caught.value.reason == "header_too_large"


def test_many_headers_together_stop_at_the_total_bound() -> None:
    headers = [(f"X-Part-{i}", ["{{credential:big}}"]) for i in range(1000)]  # 16 MiB in all
    tracemalloc.start()
    try:
        with pytest.raises(HeaderTooLarge, match="headers would be longer than 65536 bytes") as e:
            substitute_headers(headers, {"big": BIG}, bounds=HeaderBounds())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * MIB
    assert "'X-Part-3'" in e.value.message  # the fourth 16 KiB value is the one that passes


def test_values_within_the_bounds_substitute_as_before() -> None:
    bounds = HeaderBounds(max_value_bytes=40, max_total_bytes=1000)
    done = substitute_headers(
        [("Authorization", ["Bearer {{credential:k}}"]), ("X-Missing", ["{{credential:nope}}"])],
        {"k": "s" * 33},  # "Bearer " + 33 = 40 bytes: exactly the bound
        bounds=bounds,
    )
    assert done.headers == (
        ("Authorization", "Bearer " + "s" * 33),
        ("X-Missing", "{{credential:nope}}"),
    )
    with pytest.raises(HeaderTooLarge, match="'Authorization' would be longer than 40 bytes"):
        substitute_headers(
            [("Authorization", ["Bearer {{credential:k}}"])], {"k": "s" * 34}, bounds=bounds
        )


@pytest.mark.parametrize(
    "template",
    [
        "plain",
        "Bearer {{credential:k}}",
        "{{credential:k}}{{credential:k}}-{{credential:missing}}",
        "{{credential: k}} {{Credential:k}} {{credential:k}}",
        "{{{credential:k}}}",
        "{{credential:k{{credential:k}}",
    ],
)
def test_the_vaults_size_rule_matches_what_the_router_builds(template: str) -> None:
    """The vault computes sizes without building (services.common.header_bounds); they must be
    the sizes the router's substitution produces."""
    values = {"k": "value-of-k"}
    (built,) = substitute_headers([("X", [template])], values).headers
    assert substituted_size(template, values) == len(built[1])
    exact = HeaderBounds(max_value_bytes=len(built[1]), max_total_bytes=10_000)
    assert headers_problem([("X", [template])], values, exact) is None
    tight = HeaderBounds(max_value_bytes=len(built[1]) - 1, max_total_bytes=10_000)
    assert headers_problem([("X", [template])], values, tight) is not None


def test_the_bounds_are_settings() -> None:
    defaults = RouterSettings.from_env({})
    assert defaults.header_bounds == HeaderBounds(32 * 1024, 64 * 1024)
    chosen = RouterSettings.from_env(
        {"ROUTER_MAX_HEADER_VALUE_BYTES": "8192", "ROUTER_MAX_HEADERS_BYTES": "16384"}
    )
    assert chosen.header_bounds == HeaderBounds(8192, 16384)
    with pytest.raises(ValueError, match="ROUTER_MAX_HEADERS_BYTES must be at least 1024"):
        RouterSettings.from_env({"ROUTER_MAX_HEADERS_BYTES": "64"})


def _request(name: str) -> router_pb2.InvokeRequest:
    return router_pb2.InvokeRequest(
        user_id=USER, provider_name=name, method="POST", path="/chat", body=b"{}"
    )


async def test_an_amplified_call_fails_cleanly_and_the_router_keeps_serving(
    fake_vault: FakeVault, fake_env: RouterEnv, upstream: FakeUpstream
) -> None:
    # What the issue tried: 910 copies in one header made a 14.9 MB header block upstream.
    # The fake vault stores what it is given (the real one refuses this at save time; the
    # user's values may still grow after the provider was saved).
    fake_vault.providers[USER] = [
        provider("amplified", upstream.base_url, {"X-Amplified": ["{{credential:big}}" * 910]}),
        provider("normal", upstream.base_url, {"Authorization": ["Bearer {{credential:big}}"]}),
    ]
    fake_vault.credentials[USER] = {"big": BIG}
    for streamed in (True, False):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            if streamed:
                await fake_env.invoke(_request("amplified"))
            else:
                await fake_env.stub().InvokeBuffered(
                    router_pb2.InvokeBufferedRequest(call=_request("amplified")), timeout=10
                )
        err = caught.value
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert ("x-error-reason", "header_too_large") in tuple(err.trailing_metadata() or ())
        assert "'X-Amplified'" in (err.details() or "")
        assert "sk-amplify" not in (err.details() or "")
    assert upstream.requests == []  # nothing was sent

    answer = await fake_env.invoke(_request("normal"))
    assert answer.status == 200
    (seen,) = upstream.requests
    assert seen.header("authorization") == f"Bearer {BIG}"


async def test_the_callers_forwarded_headers_count_towards_the_total(
    fake_vault: FakeVault, fake_env: RouterEnv, upstream: FakeUpstream
) -> None:
    fake_vault.providers[USER] = [
        provider("p", upstream.base_url, {f"X-Part-{i}": ["{{credential:big}}"] for i in range(3)})
    ]
    fake_vault.credentials[USER] = {"big": BIG}
    ok = await fake_env.invoke(_request("p"))  # three 16 KiB values: 48 KiB, within 64 KiB
    assert ok.status == 200
    request = _request("p")
    request.headers.append(router_pb2.Header(name="user-agent", value="u" * 20_000))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await fake_env.invoke(request)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "'user-agent'" in (caught.value.details() or "")
    assert len(upstream.requests) == 1
