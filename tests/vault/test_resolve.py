"""Resolve by provider name and by model: one RPC, exactly the referenced keys, audited."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
from aicreds.vault.v1 import credentials_pb2 as cpb
from aicreds.vault.v1 import providers_pb2 as pb
from aicreds.vault.v1.credentials_pb2_grpc import CredentialServiceStub
from aicreds.vault.v1.providers_pb2_grpc import ProviderServiceStub

from services.vault.store.location import DatabaseLocation
from tests.support.databases import raw_execute, raw_fetch
from tests.support.vault import VaultHandle, running_vault

CREDENTIALS = {
    "openai_api_key": "sk-RESOLVE-openai-7h3k",
    "openai_org": "org-RESOLVE-22",
    "anthropic_api_key": "sk-ant-RESOLVE-anthropic",
    "unrelated": "sk-RESOLVE-unrelated-never-returned",
}
LITERAL = "literal-RESOLVE-secret-123456"


def _hv(*values: str) -> pb.HeaderValues:
    return pb.HeaderValues(values=list(values))


PROVIDERS = [
    pb.Provider(
        name="openai",
        kind=pb.PROVIDER_KIND_OPENAI,
        base_url="https://api.openai.com/v1",
        headers={
            "Authorization": _hv("Bearer {{credential:openai_api_key}}"),
            "OpenAI-Organization": _hv("{{credential:openai_org}}"),
            "X-Extra": _hv("{{credential:zz_missing}} {{credential:a_missing}}"),
            "X-Literal": _hv(LITERAL),
            "X-Malformed": _hv("{{credential: unrelated}}"),
        },
        models=["gpt-4o", "shared-model"],
        on_missing_credential=pb.ON_MISSING_CREDENTIAL_ERROR,
    ),
    pb.Provider(
        name="anthropic",
        kind=pb.PROVIDER_KIND_ANTHROPIC,
        base_url="https://api.anthropic.com",
        headers={"x-api-key": _hv("{{credential:anthropic_api_key}}")},
        models=["claude-sonnet-4", "shared-model", "meta-llama/Llama-3-70b"],
    ),
    pb.Provider(
        name="bare",
        kind=pb.PROVIDER_KIND_CUSTOM,
        base_url="http://127.0.0.1:9/v1",
        models=["bare-model"],
    ),
]


@pytest.fixture
async def vault(tmp_path: Path) -> AsyncIterator[VaultHandle]:
    async with running_vault(tmp_path) as handle:
        manage = CredentialServiceStub(handle.channel("gateway"))
        providers = ProviderServiceStub(handle.channel("gateway"))
        await manage.ReplaceCredentials(
            cpb.ReplaceCredentialsRequest(user_id="alice", credentials=CREDENTIALS)
        )
        for provider in PROVIDERS:
            await providers.CreateProvider(
                pb.CreateProviderRequest(user_id="alice", provider=provider)
            )
        yield handle


def _router(vault: VaultHandle) -> CredentialServiceStub:
    return CredentialServiceStub(vault.channel("router"))


async def test_resolve_by_provider_returns_only_referenced_keys_and_names_missing_ones(
    vault: VaultHandle,
) -> None:
    resolved = await _router(vault).Resolve(
        cpb.ResolveRequest(user_id="alice", provider_name="openai")
    )
    assert resolved.provider == PROVIDERS[0]  # unmasked, literal included: the router needs it
    assert dict(resolved.values) == {
        "openai_api_key": CREDENTIALS["openai_api_key"],
        "openai_org": CREDENTIALS["openai_org"],
    }
    assert list(resolved.missing_keys) == ["a_missing", "zz_missing"]
    assert resolved.upstream_model == ""


async def test_a_provider_without_placeholders_resolves_no_values(vault: VaultHandle) -> None:
    resolved = await _router(vault).Resolve(
        cpb.ResolveRequest(user_id="alice", provider_name="bare")
    )
    assert resolved.provider.name == "bare"
    assert dict(resolved.values) == {} and list(resolved.missing_keys) == []


@pytest.mark.parametrize(
    ("model", "provider", "upstream_model"),
    [
        ("gpt-4o", "openai", "gpt-4o"),
        ("claude-sonnet-4", "anthropic", "claude-sonnet-4"),
        ("openai/gpt-4o", "openai", "gpt-4o"),
        ("anthropic/claude-3-opus", "anthropic", "claude-3-opus"),  # a prefix needs no listing
        ("openai/org/model", "openai", "org/model"),
        ("meta-llama/Llama-3-70b", "anthropic", "meta-llama/Llama-3-70b"),  # not a prefix
        ("shared-model", "anthropic", "shared-model"),  # several list it: first by name
    ],
)
async def test_resolve_by_model_selects_as_spec_2_6(
    vault: VaultHandle, model: str, provider: str, upstream_model: str
) -> None:
    resolved = await _router(vault).Resolve(cpb.ResolveRequest(user_id="alice", model=model))
    assert resolved.provider.name == provider
    assert resolved.upstream_model == upstream_model
    referenced = {"openai": {"openai_api_key", "openai_org"}, "anthropic": {"anthropic_api_key"}}
    assert set(resolved.values) == referenced[provider]
    assert "unrelated" not in resolved.values


@pytest.mark.parametrize(
    ("request_", "code", "reason"),
    [
        (cpb.ResolveRequest(user_id="alice", model="gpt-5"), "NOT_FOUND", "model_not_found"),
        (
            cpb.ResolveRequest(user_id="alice", model="nobody/gpt-4o"),
            "NOT_FOUND",
            "model_not_found",
        ),
        (cpb.ResolveRequest(user_id="alice", model="openai/"), "NOT_FOUND", "model_not_found"),
        (cpb.ResolveRequest(user_id="alice", model=""), "INVALID_ARGUMENT", "invalid_argument"),
        # No model name at all: served by no provider, the catalog's answer too (SPEC 2.6).
        (
            cpb.ResolveRequest(user_id="alice", model="openai/gpt-4o "),
            "NOT_FOUND",
            "model_not_found",
        ),
        (cpb.ResolveRequest(user_id="alice", model="m" * 257), "NOT_FOUND", "model_not_found"),
        (
            cpb.ResolveRequest(user_id="alice", provider_name="absent"),
            "NOT_FOUND",
            "provider_not_found",
        ),
        (
            cpb.ResolveRequest(user_id="alice", provider_name="Bad Name"),
            "INVALID_ARGUMENT",
            "invalid_argument",
        ),
        (
            cpb.ResolveRequest(user_id="bob", provider_name="openai"),
            "NOT_FOUND",
            "provider_not_found",
        ),
        (cpb.ResolveRequest(user_id="bob", model="gpt-4o"), "NOT_FOUND", "model_not_found"),
    ],
)
async def test_resolve_failures(
    vault: VaultHandle, request_: cpb.ResolveRequest, code: str, reason: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _router(vault).Resolve(request_)
    assert info.value.code() == getattr(grpc.StatusCode, code)
    assert dict(info.value.trailing_metadata() or ())["x-error-reason"] == reason


async def test_the_gateway_cannot_resolve(vault: VaultHandle) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await CredentialServiceStub(vault.channel("gateway")).Resolve(
            cpb.ResolveRequest(user_id="alice", provider_name="openai")
        )
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_every_resolve_is_audited_with_key_names_and_never_values(
    vault: VaultHandle,
) -> None:
    router = _router(vault)
    await router.Resolve(cpb.ResolveRequest(user_id="alice", provider_name="openai"))
    await router.Resolve(cpb.ResolveRequest(user_id="alice", model="anthropic/claude-x"))
    with pytest.raises(grpc.aio.AioRpcError):
        await router.Resolve(cpb.ResolveRequest(user_id="alice", model="gpt-5"))
    rows = raw_fetch(
        vault.settings.database,
        "SELECT caller, user_id, action, keys, outcome FROM audit_events"
        " WHERE action = 'credentials.resolve' ORDER BY id",
    )
    assert [(c, u, a, json.loads(k), o) for c, u, a, k, o in rows] == [
        (
            "router",
            "alice",
            "credentials.resolve",
            ["a_missing", "openai_api_key", "openai_org", "zz_missing"],
            "ok",
        ),
        ("router", "alice", "credentials.resolve", ["anthropic_api_key"], "ok"),
        ("router", "alice", "credentials.resolve", [], "model_not_found"),
    ]
    dump = json.dumps(raw_fetch(vault.settings.database, "SELECT * FROM audit_events"))
    for value in (*CREDENTIALS.values(), LITERAL):
        assert value not in dump


def _refuse_resolve_audits(db: DatabaseLocation) -> None:
    """A trigger that makes the database refuse every audit row of a Resolve."""
    if isinstance(db, Path):
        raw_execute(
            db,
            "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events"
            " WHEN NEW.action = 'credentials.resolve' BEGIN SELECT RAISE(ABORT, 'full'); END",
        )
        return
    raw_execute(
        db,
        "CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN RAISE EXCEPTION 'full'; END $$",
    )
    raw_execute(
        db,
        "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events FOR EACH ROW"
        " WHEN (NEW.action = 'credentials.resolve') EXECUTE FUNCTION refuse_audit()",
    )


def _accept_audits_again(db: DatabaseLocation) -> None:
    raw_execute(
        db, "DROP TRIGGER refuse_audit" + ("" if isinstance(db, Path) else " ON audit_events")
    )


async def test_resolves_whose_audit_batch_fails_hand_out_nothing(vault: VaultHandle) -> None:
    # Concurrent Resolves share one audit commit; when it fails, every one of them fails.
    _refuse_resolve_audits(vault.settings.database)
    router = _router(vault)
    requests = [
        cpb.ResolveRequest(user_id="alice", provider_name="openai"),
        cpb.ResolveRequest(user_id="alice", model="claude-sonnet-4"),
        cpb.ResolveRequest(user_id="alice", keys=cpb.KeyNames(keys=["openai_api_key"])),
    ] * 4
    results = await asyncio.gather(*(router.Resolve(r) for r in requests), return_exceptions=True)
    for result in results:
        assert isinstance(result, grpc.aio.AioRpcError)
        assert result.code() == grpc.StatusCode.INTERNAL
        assert result.details() == "internal error"
    _accept_audits_again(vault.settings.database)
    resolved = await router.Resolve(cpb.ResolveRequest(user_id="alice", provider_name="openai"))
    assert resolved.values["openai_api_key"] == CREDENTIALS["openai_api_key"]
