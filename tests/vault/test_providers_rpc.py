"""ProviderService over a real gRPC server: CRUD, isolation, validation, masking, at rest."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from aicreds.vault.v1 import providers_pb2 as pb
from aicreds.vault.v1.providers_pb2_grpc import ProviderServiceStub

from tests.support.databases import raw_execute
from tests.support.vault import VaultHandle, running_vault
from tests.vault._disk import database_bytes

LITERAL = "sk-LITERAL-provider-secret-93jd82"
WARNING = "header Authorization holds a literal secret; use {{credential:...}}"


@pytest.fixture
async def vault(tmp_path: Path) -> AsyncIterator[VaultHandle]:
    async with running_vault(tmp_path) as handle:
        yield handle


def _stub(vault: VaultHandle, caller: str = "gateway") -> ProviderServiceStub:
    return ProviderServiceStub(vault.channel(caller))


def openai(**overrides: Any) -> pb.Provider:
    fields: dict[str, Any] = {
        "name": "openai",
        "kind": pb.PROVIDER_KIND_OPENAI,
        "base_url": "https://api.openai.com/v1",
        "headers": {
            "Authorization": pb.HeaderValues(values=["Bearer {{credential:openai_api_key}}"]),
            "X-Title": pb.HeaderValues(values=["my app"]),
        },
        "models": ["gpt-4o", "gpt-4o-mini"],
        "on_missing_credential": pb.ON_MISSING_CREDENTIAL_ERROR,
    }
    fields.update(overrides)
    return pb.Provider(**fields)


def _headers(provider: pb.Provider) -> dict[str, list[str]]:
    return {name: list(values.values) for name, values in provider.headers.items()}


async def _names(stub: ProviderServiceStub, user: str) -> list[str]:
    listed = await stub.ListProviders(pb.ListProvidersRequest(user_id=user))
    return [p.name for p in listed.providers]


async def _code(call: Any) -> tuple[grpc.StatusCode, str, str]:
    try:
        await call
    except grpc.aio.AioRpcError as err:
        reason = dict(err.trailing_metadata() or ()).get("x-error-reason", "")
        return err.code(), err.details() or "", str(reason)
    return grpc.StatusCode.OK, "", ""


async def test_provider_crud_round_trips(vault: VaultHandle) -> None:
    stub = _stub(vault)
    created = await stub.CreateProvider(
        pb.CreateProviderRequest(user_id="alice", provider=openai())
    )
    assert created.provider == openai()  # placeholders only: nothing masked
    assert list(created.warnings) == []

    anthropic = pb.Provider(
        name="anthropic",
        kind=pb.PROVIDER_KIND_ANTHROPIC,
        base_url="https://api.anthropic.com",
        headers={"x-api-key": pb.HeaderValues(values=["{{credential:anthropic_api_key}}"])},
        models=["claude-sonnet-4"],
    )
    await stub.CreateProvider(pb.CreateProviderRequest(user_id="alice", provider=anthropic))
    got = await stub.GetProvider(pb.GetProviderRequest(user_id="alice", name="anthropic"))
    # An unset on_missing_credential is stored as `warn`, its documented meaning.
    assert got.provider.on_missing_credential == pb.ON_MISSING_CREDENTIAL_WARN
    assert _headers(got.provider) == {"x-api-key": ["{{credential:anthropic_api_key}}"]}
    assert await _names(stub, "alice") == ["anthropic", "openai"]

    changed = openai(
        kind=pb.PROVIDER_KIND_CUSTOM,
        base_url="http://localhost:8080/v1",
        headers={"Authorization": pb.HeaderValues(values=[f"Bearer {LITERAL}"])},
        models=["local-model"],
        on_missing_credential=pb.ON_MISSING_CREDENTIAL_WARN,
    )
    updated = await stub.UpdateProvider(pb.UpdateProviderRequest(user_id="alice", provider=changed))
    assert list(updated.warnings) == [WARNING]
    assert _headers(updated.provider) == {"Authorization": ["MASKED"]}
    fetched = await stub.GetProvider(pb.GetProviderRequest(user_id="alice", name="openai"))
    assert fetched.provider.kind == pb.PROVIDER_KIND_CUSTOM
    assert fetched.provider.base_url == "http://localhost:8080/v1"
    assert list(fetched.provider.models) == ["local-model"]
    assert _headers(fetched.provider) == {"Authorization": ["MASKED"]}

    deleted = await stub.DeleteProvider(pb.DeleteProviderRequest(user_id="alice", name="openai"))
    assert deleted.name == "openai"
    assert await _names(stub, "alice") == ["anthropic"]
    for call in (
        stub.GetProvider(pb.GetProviderRequest(user_id="alice", name="openai")),
        stub.DeleteProvider(pb.DeleteProviderRequest(user_id="alice", name="openai")),
        stub.UpdateProvider(pb.UpdateProviderRequest(user_id="alice", provider=openai())),
    ):
        assert await _code(call) == (
            grpc.StatusCode.NOT_FOUND,
            "provider 'openai' not found",
            "provider_not_found",
        )


async def test_headers_copied_to_another_providers_row_fail_to_decrypt(
    vault: VaultHandle,
) -> None:
    stub = _stub(vault)
    literal = openai(
        name="literal", headers={"Authorization": pb.HeaderValues(values=[f"Bearer {LITERAL}"])}
    )
    await stub.CreateProvider(pb.CreateProviderRequest(user_id="alice", provider=literal))
    await stub.CreateProvider(pb.CreateProviderRequest(user_id="alice", provider=openai()))
    copied = raw_execute(
        vault.settings.database,
        "UPDATE providers SET headers = (SELECT headers FROM providers WHERE name = 'literal')"
        " WHERE user_id = 'alice' AND name = 'openai'",
    )
    assert copied == 1
    code, details, reason = await _code(
        stub.GetProvider(pb.GetProviderRequest(user_id="alice", name="openai"))
    )
    # Refused as any row that fails its integrity check (SPEC 4.7).
    assert (code, reason) == (grpc.StatusCode.INTERNAL, "integrity_error")
    assert LITERAL not in details
    got = await stub.GetProvider(pb.GetProviderRequest(user_id="alice", name="literal"))
    assert _headers(got.provider) == {"Authorization": ["MASKED"]}


async def test_a_duplicate_name_is_already_exists(vault: VaultHandle) -> None:
    stub = _stub(vault)
    await stub.CreateProvider(pb.CreateProviderRequest(user_id="alice", provider=openai()))
    code, _, reason = await _code(
        stub.CreateProvider(
            pb.CreateProviderRequest(user_id="alice", provider=openai(models=["other"]))
        )
    )
    assert (code, reason) == (grpc.StatusCode.ALREADY_EXISTS, "provider_exists")
    got = await stub.GetProvider(pb.GetProviderRequest(user_id="alice", name="openai"))
    assert list(got.provider.models) == ["gpt-4o", "gpt-4o-mini"]


async def test_a_literal_secret_save_succeeds_with_a_warning_and_is_masked(
    vault: VaultHandle,
) -> None:
    stub = _stub(vault)
    provider = openai(
        headers={
            "Authorization": pb.HeaderValues(values=[f"Bearer {LITERAL}"]),
            "X-Title": pb.HeaderValues(values=["hello"]),
            "Cookie": pb.HeaderValues(values=["a=b"]),
        }
    )
    saved = await stub.CreateProvider(pb.CreateProviderRequest(user_id="alice", provider=provider))
    assert sorted(saved.warnings) == [
        "header Authorization holds a literal secret; use {{credential:...}}",
        "header Cookie holds a literal secret; use {{credential:...}}",
    ]
    assert _headers(saved.provider) == {
        "Authorization": ["MASKED"],
        "X-Title": ["hello"],
        "Cookie": ["MASKED"],
    }
    listed = await stub.ListProviders(pb.ListProvidersRequest(user_id="alice"))
    assert LITERAL not in str(listed)
    # Header values are sealed at rest: the literal is nowhere in the database (on SQLite its
    # file and WAL, on PostgreSQL a dump with its blobs decoded).
    data = database_bytes(vault.settings.database)
    assert LITERAL.encode() not in data and LITERAL.encode().hex().encode() not in data


async def test_users_never_see_or_change_each_others_providers(vault: VaultHandle) -> None:
    stub = _stub(vault)
    await stub.CreateProvider(pb.CreateProviderRequest(user_id="alice", provider=openai()))
    assert await _names(stub, "bob") == []
    assert (await _code(stub.GetProvider(pb.GetProviderRequest(user_id="bob", name="openai"))))[
        0
    ] == grpc.StatusCode.NOT_FOUND
    assert (
        await _code(stub.UpdateProvider(pb.UpdateProviderRequest(user_id="bob", provider=openai())))
    )[0] == grpc.StatusCode.NOT_FOUND
    assert (
        await _code(stub.DeleteProvider(pb.DeleteProviderRequest(user_id="bob", name="openai")))
    )[0] == grpc.StatusCode.NOT_FOUND
    # The same name is free for another user, and stays separate.
    bobs = openai(base_url="https://bob.example/v1", models=["bob-model"])
    await stub.CreateProvider(pb.CreateProviderRequest(user_id="bob", provider=bobs))
    await stub.DeleteProvider(pb.DeleteProviderRequest(user_id="bob", name="openai"))
    alices = await stub.GetProvider(pb.GetProviderRequest(user_id="alice", name="openai"))
    assert alices.provider == openai()


async def test_only_manage_may_call_provider_methods(vault: VaultHandle) -> None:
    router = _stub(vault, "router")
    for call in (
        router.CreateProvider(pb.CreateProviderRequest(user_id="alice", provider=openai())),
        router.GetProvider(pb.GetProviderRequest(user_id="alice", name="openai")),
        router.ListProviders(pb.ListProvidersRequest(user_id="alice")),
        router.UpdateProvider(pb.UpdateProviderRequest(user_id="alice", provider=openai())),
        router.DeleteProvider(pb.DeleteProviderRequest(user_id="alice", name="openai")),
    ):
        assert (await _code(call))[0] == grpc.StatusCode.PERMISSION_DENIED
    anonymous = ProviderServiceStub(vault.channel(None))
    code, _, _ = await _code(anonymous.ListProviders(pb.ListProvidersRequest(user_id="alice")))
    assert code == grpc.StatusCode.UNAUTHENTICATED


def _hv(*values: str) -> pb.HeaderValues:
    return pb.HeaderValues(values=list(values))


INVALID = [
    ("name upper case", openai(name="OpenAI"), "provider name 'OpenAI'"),
    ("name empty", openai(name=""), "provider name ''"),
    ("name space", openai(name="my provider"), "provider name"),
    ("name too long", openai(name="a" * 65), "provider name"),
    ("name slash", openai(name="a/b"), "provider name"),
    ("kind unset", openai(kind=pb.PROVIDER_KIND_UNSPECIFIED), "kind"),
    ("kind unknown", openai(kind=42), "kind"),
    ("base_url empty", openai(base_url=""), "base_url"),
    ("base_url ftp", openai(base_url="ftp://example.com"), "base_url"),
    ("base_url relative", openai(base_url="/v1"), "base_url"),
    ("base_url no host", openai(base_url="https://"), "base_url"),
    ("base_url userinfo", openai(base_url=f"https://u:{LITERAL}@h.example"), "base_url"),
    ("base_url space", openai(base_url="https://a b.example"), "base_url"),
    ("base_url bad port", openai(base_url="https://h.example:99999"), "base_url"),
    ("base_url fragment", openai(base_url="https://h.example/v1#x"), "base_url"),
    ("header name space", openai(headers={"Bad Header": _hv("x")}), "header name 'Bad Header'"),
    ("header name colon", openai(headers={"X:Y": _hv("x")}), "header name 'X:Y'"),
    ("header name empty", openai(headers={"": _hv("x")}), "header name ''"),
    ("header name unicode", openai(headers={"X-Ключ": _hv("x")}), "header name"),
    ("header case duplicate", openai(headers={"X-A": _hv("1"), "x-a": _hv("2")}), "case"),
    ("header no values", openai(headers={"X-A": _hv()}), "header 'X-A' has no values"),
    (
        "header value newline",
        openai(headers={"Authorization": _hv(f"{LITERAL}\r\nX: y")}),
        "value 1 of header 'Authorization'",
    ),
    (
        "header value nul",
        openai(headers={"X-A": _hv("ok", f"{LITERAL}\x00")}),
        "value 2 of header 'X-A'",
    ),
    ("header value too long", openai(headers={"X-A": _hv("v" * 16385)}), "header 'X-A'"),
    ("header reserved", openai(headers={"Host": _hv("evil.example")}), "header 'Host'"),
    ("model empty", openai(models=["gpt-4o", ""]), "model ''"),
    ("model spaces", openai(models=[" gpt-4o"]), "model"),
    ("model control", openai(models=["gpt\n4o"]), "model"),
    ("model duplicate", openai(models=["gpt-4o", "gpt-4o"]), "listed twice"),
    ("on_missing unknown", openai(on_missing_credential=7), "on_missing_credential"),
]


@pytest.mark.parametrize(
    ("provider", "message"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID]
)
async def test_each_invalid_provider_is_refused_and_nothing_is_written(
    vault: VaultHandle, provider: pb.Provider, message: str
) -> None:
    stub = _stub(vault)
    # A stored `openai`, so that an update of it is refused by validation, not as NOT_FOUND.
    await stub.CreateProvider(pb.CreateProviderRequest(user_id="alice", provider=openai()))
    before = await stub.ListProviders(pb.ListProvidersRequest(user_id="alice"))

    for call in (
        stub.CreateProvider(pb.CreateProviderRequest(user_id="alice", provider=provider)),
        stub.UpdateProvider(pb.UpdateProviderRequest(user_id="alice", provider=provider)),
    ):
        code, details, reason = await _code(call)
        assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "invalid_argument")
        assert message in details
        assert LITERAL not in details
    assert await stub.ListProviders(pb.ListProvidersRequest(user_id="alice")) == before
