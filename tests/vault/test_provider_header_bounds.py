"""Saving a provider whose headers, substituted with the user's current credential values, would
pass the router's header bounds (SPEC 3.5) is refused, over a real gRPC server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from aicreds.vault.v1 import credentials_pb2
from aicreds.vault.v1 import providers_pb2 as pb
from aicreds.vault.v1.credentials_pb2_grpc import CredentialServiceStub
from aicreds.vault.v1.providers_pb2_grpc import ProviderServiceStub

from services.common.header_bounds import DEFAULT_MAX_HEADER_VALUE_BYTES
from tests.support.vault import VaultHandle, running_vault

BIG = "b" * 16 * 1024  # the largest credential value SPEC 2.2 allows
SECRET_MARK = "sk-bounds-secret-"


@pytest.fixture
async def vault(tmp_path: Path) -> AsyncIterator[VaultHandle]:
    async with running_vault(tmp_path) as handle:
        yield handle


def _provider(headers: dict[str, list[str]], name: str = "amplified") -> pb.Provider:
    return pb.Provider(
        name=name,
        kind=pb.PROVIDER_KIND_CUSTOM,
        base_url="https://api.example.com/v1",
        headers={k: pb.HeaderValues(values=v) for k, v in headers.items()},
        models=["m"],
    )


async def _failure(call: Any) -> tuple[grpc.StatusCode, str, str]:
    try:
        await call
    except grpc.aio.AioRpcError as err:
        reason = dict(err.trailing_metadata() or ()).get("x-error-reason", "")
        return err.code(), err.details() or "", str(reason)
    return grpc.StatusCode.OK, "", ""


async def _put(vault: VaultHandle, key: str, value: str) -> None:
    stub = CredentialServiceStub(vault.channel("gateway"))
    await stub.PutCredential(
        credentials_pb2.PutCredentialRequest(user_id="alice", key=key, value=value)
    )


async def test_a_template_the_current_values_amplify_past_the_bound_is_refused(
    vault: VaultHandle,
) -> None:
    await _put(vault, "big", SECRET_MARK + BIG[len(SECRET_MARK) :])
    stub = ProviderServiceStub(vault.channel("gateway"))
    # 910 placeholders: 16 KiB of template, about 15 MB once substituted (the case).
    amplified = {"X-Amplified": ["{{credential:big}}" * 910], "X-Title": ["my app"]}
    code, details, reason = await _failure(
        stub.CreateProvider(
            pb.CreateProviderRequest(user_id="alice", provider=_provider(amplified))
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert reason == "header_too_large"
    assert "'X-Amplified'" in details
    assert SECRET_MARK not in details
    listed = await stub.ListProviders(pb.ListProvidersRequest(user_id="alice"))
    assert list(listed.providers) == []  # nothing was written


async def test_two_big_values_in_one_header_pass_the_value_bound(vault: VaultHandle) -> None:
    await _put(vault, "big", BIG)
    stub = ProviderServiceStub(vault.channel("gateway"))
    one = {"Authorization": ["Bearer {{credential:big}}"]}
    await stub.CreateProvider(pb.CreateProviderRequest(user_id="alice", provider=_provider(one)))
    # Two 16 KiB values make one value of 32 KiB and a few bytes: over the 32 KiB bound.
    two = {"Authorization": ["Bearer {{credential:big}}{{credential:big}}"]}
    code, details, reason = await _failure(
        stub.UpdateProvider(pb.UpdateProviderRequest(user_id="alice", provider=_provider(two)))
    )
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "header_too_large")
    assert f"longer than {DEFAULT_MAX_HEADER_VALUE_BYTES} bytes" in details
    got = await stub.GetProvider(pb.GetProviderRequest(user_id="alice", name="amplified"))
    assert got.provider.headers["Authorization"].values == ["Bearer {{credential:big}}"]


async def test_all_headers_together_are_bounded(vault: VaultHandle) -> None:
    await _put(vault, "big", BIG)
    stub = ProviderServiceStub(vault.channel("gateway"))
    # Each value fits its own bound, but five of them pass the 64 KiB of all lines together.
    headers = {f"X-Part-{i}": ["{{credential:big}}"] for i in range(5)}
    code, details, reason = await _failure(
        stub.CreateProvider(pb.CreateProviderRequest(user_id="alice", provider=_provider(headers)))
    )
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "header_too_large")
    assert "headers would be longer than" in details


async def test_missing_and_small_values_do_not_count_as_large(vault: VaultHandle) -> None:
    """A placeholder whose key is missing stays as it is (its own few bytes); another user's big
    value is not this user's."""
    await _put(vault, "small", "sk-small")
    stub = ProviderServiceStub(vault.channel("gateway"))
    headers = {"X-Many": ["{{credential:small}}{{credential:absent}}" * 200]}
    created = await stub.CreateProvider(
        pb.CreateProviderRequest(user_id="alice", provider=_provider(headers))
    )
    assert created.provider.name == "amplified"
    other = CredentialServiceStub(vault.channel("gateway"))
    await other.PutCredential(
        credentials_pb2.PutCredentialRequest(user_id="bob", key="big", value=BIG)
    )
    fine = {"X-Amplified": ["{{credential:big}}" * 910]}
    await stub.CreateProvider(
        pb.CreateProviderRequest(user_id="alice", provider=_provider(fine, name="other"))
    )
