"""CredentialService over a real gRPC server: round trips, isolation, rights, validation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from aicreds.vault.v1 import credentials_pb2 as pb
from aicreds.vault.v1.credentials_pb2_grpc import CredentialServiceStub
from google.protobuf import message_factory

from services.common.credential_rules import validate_value
from services.common.errors import InvalidArgument
from services.vault.rights import CREDENTIAL_SERVICE
from tests.support.vault import VaultHandle, running_vault

CALLERS = {
    "gateway": ["manage"],
    "router": ["resolve"],
    "both": ["manage", "resolve"],
    "auditor": ["admin"],
}


@pytest.fixture
async def vault(tmp_path: Path) -> AsyncIterator[VaultHandle]:
    async with running_vault(tmp_path, CALLERS) as handle:
        yield handle


def _stub(vault: VaultHandle, caller: str | None = "gateway") -> CredentialServiceStub:
    return CredentialServiceStub(vault.channel(caller))


async def _map(stub: CredentialServiceStub, user: str) -> dict[str, str]:
    return dict((await stub.GetCredentials(pb.GetCredentialsRequest(user_id=user))).credentials)


async def test_every_rpc_round_trips(vault: VaultHandle) -> None:
    stub = _stub(vault)
    assert await _map(stub, "alice") == {}

    put = await stub.PutCredential(
        pb.PutCredentialRequest(user_id="alice", key="openai_api_key", value="sk-openai-1")
    )
    assert (put.key, put.value) == ("openai_api_key", "sk-openai-1")
    one = await stub.GetCredential(pb.GetCredentialRequest(user_id="alice", key="openai_api_key"))
    assert (one.key, one.value) == ("openai_api_key", "sk-openai-1")

    await stub.PutCredential(
        pb.PutCredentialRequest(user_id="alice", key="openai_api_key", value="sk-openai-2")
    )
    assert await _map(stub, "alice") == {"openai_api_key": "sk-openai-2"}

    new_map = {"anthropic_api_key": "sk-ant-1", "My.Key-2": "Bearer x\ty", "k": "v" * 16384}
    replaced = await stub.ReplaceCredentials(
        pb.ReplaceCredentialsRequest(user_id="alice", credentials=new_map)
    )
    assert dict(replaced.credentials) == new_map
    assert await _map(stub, "alice") == new_map  # openai_api_key is gone

    deleted = await stub.DeleteCredential(pb.DeleteCredentialRequest(user_id="alice", key="k"))
    assert deleted.key == "k"
    assert set(await _map(stub, "alice")) == {"anthropic_api_key", "My.Key-2"}

    resolved = await _stub(vault, "router").Resolve(
        pb.ResolveRequest(
            user_id="alice", keys=pb.KeyNames(keys=["anthropic_api_key", "nope", "a_missing"])
        )
    )
    assert dict(resolved.values) == {"anthropic_api_key": "sk-ant-1"}
    assert list(resolved.missing_keys) == ["a_missing", "nope"]
    assert not resolved.HasField("provider")

    gone = await stub.DeleteCredentials(pb.DeleteCredentialsRequest(user_id="alice"))
    assert gone.deleted == 2
    assert await _map(stub, "alice") == {}
    again = await stub.DeleteCredentials(pb.DeleteCredentialsRequest(user_id="alice"))
    assert again.deleted == 0

    empty = await stub.ReplaceCredentials(pb.ReplaceCredentialsRequest(user_id="alice"))
    assert dict(empty.credentials) == {}


async def test_keys_are_case_sensitive(vault: VaultHandle) -> None:
    stub = _stub(vault)
    await stub.PutCredential(pb.PutCredentialRequest(user_id="u", key="Key", value="upper"))
    await stub.PutCredential(pb.PutCredentialRequest(user_id="u", key="key", value="lower"))
    assert await _map(stub, "u") == {"Key": "upper", "key": "lower"}


async def test_missing_keys_are_not_found(vault: VaultHandle) -> None:
    stub = _stub(vault)
    for call in (
        stub.GetCredential(pb.GetCredentialRequest(user_id="alice", key="absent")),
        stub.DeleteCredential(pb.DeleteCredentialRequest(user_id="alice", key="absent")),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert "absent" in (info.value.details() or "")
        trailing = dict(await _trailing(info.value))
        assert trailing.get("x-error-reason") == "credential_not_found"


async def _trailing(err: grpc.aio.AioRpcError) -> Any:
    return err.trailing_metadata() or ()


async def test_user_b_never_sees_or_changes_user_a(vault: VaultHandle) -> None:
    stub = _stub(vault)
    resolver = _stub(vault, "router")
    await stub.ReplaceCredentials(
        pb.ReplaceCredentialsRequest(user_id="alice", credentials={"shared": "sk-alice", "a": "1"})
    )
    await stub.PutCredential(pb.PutCredentialRequest(user_id="bob", key="shared", value="sk-bob"))

    assert await _map(stub, "bob") == {"shared": "sk-bob"}
    assert (
        await stub.GetCredential(pb.GetCredentialRequest(user_id="bob", key="shared"))
    ).value == "sk-bob"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.GetCredential(pb.GetCredentialRequest(user_id="bob", key="a"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    resolved = await resolver.Resolve(
        pb.ResolveRequest(user_id="bob", keys=pb.KeyNames(keys=["shared", "a"]))
    )
    assert dict(resolved.values) == {"shared": "sk-bob"} and list(resolved.missing_keys) == ["a"]

    # Bob's every kind of write leaves Alice's map alone.
    await stub.PutCredential(pb.PutCredentialRequest(user_id="bob", key="a", value="bob-a"))
    await stub.DeleteCredential(pb.DeleteCredentialRequest(user_id="bob", key="a"))
    await stub.ReplaceCredentials(
        pb.ReplaceCredentialsRequest(user_id="bob", credentials={"b": "2"})
    )
    await stub.DeleteCredentials(pb.DeleteCredentialsRequest(user_id="bob"))
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.DeleteCredential(pb.DeleteCredentialRequest(user_id="bob", key="shared"))
    assert await _map(stub, "alice") == {"shared": "sk-alice", "a": "1"}
    assert await _map(stub, "bob") == {}


def _all_methods() -> list[tuple[str, Any, Any]]:
    """The unary methods (`ResolveStream`'s rights: test_resolve_stream.py)."""
    service = pb.DESCRIPTOR.services_by_name["CredentialService"]
    return [
        (
            method.name,
            message_factory.GetMessageClass(method.input_type),
            message_factory.GetMessageClass(method.output_type),
        )
        for method in service.methods
        if not method.client_streaming
    ]


async def _raw_call(channel: grpc.aio.Channel, name: str, request_type: Any, reply: Any) -> Any:
    call = channel.unary_unary(
        f"/{CREDENTIAL_SERVICE}/{name}",
        request_serializer=request_type.SerializeToString,
        response_deserializer=reply.FromString,
    )
    request = request_type(user_id="alice")
    if name == "Resolve":
        request.keys.keys.append("k")
    elif "key" in request_type.DESCRIPTOR.fields_by_name:
        request.key = "k"
        if "value" in request_type.DESCRIPTOR.fields_by_name:
            request.value = "v"
    return await call(request, timeout=5)


async def _code(channel: grpc.aio.Channel, name: str, req: Any, reply: Any) -> grpc.StatusCode:
    try:
        await _raw_call(channel, name, req, reply)
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


async def test_rights_decide_who_may_call_what(vault: VaultHandle) -> None:
    methods = _all_methods()
    assert {m[0] for m in methods} >= {
        "GetCredentials",
        "ReplaceCredentials",
        "GetCredential",
        "PutCredential",
        "DeleteCredential",
        "DeleteCredentials",
        "Resolve",
    }
    deny, unauth = grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED
    unknown = grpc.aio.insecure_channel(vault.address, interceptors=None)
    try:
        for name, req, reply in methods:
            is_resolve = name == "Resolve"
            router = await _code(vault.channel("router"), name, req, reply)
            gateway = await _code(vault.channel("gateway"), name, req, reply)
            admin = await _code(vault.channel("auditor"), name, req, reply)
            anonymous = await _code(vault.channel(None), name, req, reply)
            assert router == (grpc.StatusCode.OK if is_resolve else deny), name
            if is_resolve:
                assert gateway == deny, name
            else:
                assert gateway not in (deny, unauth), name
            assert admin == deny, name
            assert anonymous == unauth, name
            assert await _code(vault.channel("both"), name, req, reply) not in (deny, unauth)
            bad = unknown.unary_unary(
                f"/{CREDENTIAL_SERVICE}/{name}",
                request_serializer=req.SerializeToString,
                response_deserializer=reply.FromString,
            )
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await bad(req(user_id="alice"), metadata=(("authorization", "Bearer nope"),))
            assert info.value.code() == unauth, name
    finally:
        await unknown.close()


async def test_fifty_concurrent_puts_of_different_keys_all_land(vault: VaultHandle) -> None:
    stub = _stub(vault)
    await asyncio.gather(
        *(
            stub.PutCredential(pb.PutCredentialRequest(user_id="carol", key=f"k{i}", value=f"v{i}"))
            for i in range(50)
        )
    )
    assert await _map(stub, "carol") == {f"k{i}": f"v{i}" for i in range(50)}


INVALID_KEYS = ["", " ", "has space", "a/b", "ключ", "a:b", "k" * 129, "tab\tkey", "{{x}}"]
INVALID_VALUES = [
    "",
    "line\nbreak-sk-secret",
    "carriage\rreturn-sk-secret",
    "nul\x00-sk-secret",
    "bell\x07-sk-secret",
    "del\x7f-sk-secret",
    "unicodé-sk-secret",
    "x" * (16 * 1024 + 1),
]


async def _assert_invalid(call: Any, value: str | None, key: str | None) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = info.value.details() or ""
    if value:
        assert value not in details and value[:12] not in details
    if key:
        assert repr(key[:64]) in details


@pytest.mark.parametrize("key", INVALID_KEYS)
async def test_each_invalid_key_is_refused_and_nothing_changes(
    vault: VaultHandle, key: str
) -> None:
    stub = _stub(vault)
    before = {"good": "sk-before"}
    await stub.ReplaceCredentials(pb.ReplaceCredentialsRequest(user_id="dan", credentials=before))
    await _assert_invalid(
        stub.PutCredential(pb.PutCredentialRequest(user_id="dan", key=key, value="sk-new")),
        "sk-new",
        key,
    )
    await _assert_invalid(
        stub.ReplaceCredentials(
            pb.ReplaceCredentialsRequest(user_id="dan", credentials={"ok": "sk-ok", key: "sk-v"})
        ),
        None,
        key,
    )
    for call in (
        stub.GetCredential(pb.GetCredentialRequest(user_id="dan", key=key)),
        stub.DeleteCredential(pb.DeleteCredentialRequest(user_id="dan", key=key)),
        _stub(vault, "router").Resolve(
            pb.ResolveRequest(user_id="dan", keys=pb.KeyNames(keys=["good", key]))
        ),
    ):
        await _assert_invalid(call, None, key)
    assert await _map(stub, "dan") == before


@pytest.mark.parametrize("value", INVALID_VALUES, ids=lambda v: repr(v[:12]))
async def test_each_invalid_value_is_refused_naming_the_key_and_nothing_changes(
    vault: VaultHandle, value: str
) -> None:
    stub = _stub(vault)
    before = {"good": "sk-before"}
    await stub.ReplaceCredentials(pb.ReplaceCredentialsRequest(user_id="eve", credentials=before))
    await _assert_invalid(
        stub.PutCredential(pb.PutCredentialRequest(user_id="eve", key="good", value=value)),
        value,
        "good",
    )
    await _assert_invalid(
        stub.ReplaceCredentials(
            pb.ReplaceCredentialsRequest(
                user_id="eve", credentials={"a_fine": "sk-fine", "z_bad": value}
            )
        ),
        value,
        "z_bad",
    )
    assert await _map(stub, "eve") == before


@pytest.mark.parametrize("user", ["", "has space", "x" * 257, "tab\t"])
async def test_an_invalid_user_id_is_refused(vault: VaultHandle, user: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _stub(vault).GetCredentials(pb.GetCredentialsRequest(user_id=user))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_resolve_without_a_target_is_refused(vault: VaultHandle) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _stub(vault, "router").Resolve(pb.ResolveRequest(user_id="alice"))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    "value", ["sk-\ud800-lone-surrogate", "é" * 9000, "x" * 16384 + "\x7f"], ids=repr
)
def test_values_no_request_could_carry_are_invalid_argument_too(value: str) -> None:
    # gRPC delivers valid UTF-8 only; the domain layer (used by aicreds-admin and tests) must
    # still answer INVALID_ARGUMENT, not crash encoding the value.
    with pytest.raises(InvalidArgument, match="'k'") as info:
        validate_value("k", value)
    assert value[:8] not in info.value.message
