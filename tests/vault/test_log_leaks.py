"""No credential value, caller token or key material reaches any log record."""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import grpc
import grpc.aio
import pytest
from aicreds.vault.v1 import credentials_pb2 as pb
from aicreds.vault.v1 import providers_pb2 as ppb
from aicreds.vault.v1.credentials_pb2_grpc import CredentialServiceStub
from aicreds.vault.v1.providers_pb2_grpc import ProviderServiceStub

from services.common.logging import JsonFormatter
from services.vault.keyring import Keyring
from services.vault.store.location import DatabaseLocation
from tests.support.databases import raw_execute, raw_fetch
from tests.support.vault import running_vault

VALUES = {
    "openai_api_key": "sk-proj-LEAKCHECK-openai-a1b2c3d4e5",
    "anthropic_api_key": "sk-ant-LEAKCHECK-anthropic-f6g7h8",
    "tiny": "LEAKCHECK-tiny",
}
PROVIDER_LITERAL = "sk-LEAKCHECK-provider-literal-q8w7e6"
BAD_VALUES = ["LEAKCHECK-bad\nvalue-1", "LEAKCHECK-bad\x00value-2", "LEAKCHECK-ünicode-3"]


def _everything_logged(records: list[logging.LogRecord]) -> str:
    formatter = JsonFormatter("vault")
    parts = []
    for record in records:
        parts.append(formatter.format(record))
        parts.append(record.getMessage())
        parts.append(repr(record.__dict__))
        if record.exc_info and record.exc_info[1] is not None:
            parts.append(repr(record.exc_info[1]))
    return "\n".join(parts)


async def test_no_value_token_or_key_occurs_in_any_log_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    keyring = Keyring.generate()
    async with running_vault(tmp_path, keyring=keyring) as vault:
        stub = CredentialServiceStub(vault.channel("gateway"))
        router = CredentialServiceStub(vault.channel("router"))
        await stub.ReplaceCredentials(
            pb.ReplaceCredentialsRequest(user_id="alice", credentials=VALUES)
        )
        for key, value in VALUES.items():
            await stub.PutCredential(pb.PutCredentialRequest(user_id="bob", key=key, value=value))
            await stub.GetCredential(pb.GetCredentialRequest(user_id="bob", key=key))
        await stub.GetCredentials(pb.GetCredentialsRequest(user_id="alice"))
        stored = _stored_blobs(vault.settings.database)
        await router.Resolve(
            pb.ResolveRequest(user_id="alice", keys=pb.KeyNames(keys=[*VALUES, "missing"]))
        )
        for bad in BAD_VALUES:
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.PutCredential(
                    pb.PutCredentialRequest(user_id="alice", key="openai_api_key", value=bad)
                )
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.ReplaceCredentials(
                    pb.ReplaceCredentialsRequest(user_id="alice", credentials={"k": bad})
                )
        # Forbidden and unauthenticated calls carrying values.
        with pytest.raises(grpc.aio.AioRpcError):
            await router.PutCredential(
                pb.PutCredentialRequest(user_id="alice", key="k", value=VALUES["tiny"])
            )
        with pytest.raises(grpc.aio.AioRpcError):
            await CredentialServiceStub(vault.channel(None)).PutCredential(
                pb.PutCredentialRequest(user_id="alice", key="k", value=VALUES["tiny"])
            )
        # An internal error (a corrupted row) is logged too.
        corrupted = raw_execute(
            vault.settings.database,
            "UPDATE credentials SET blob = ? WHERE user_id = 'bob'",
            (b"\x01\x02",),
        )
        assert corrupted == len(VALUES)
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.GetCredentials(pb.GetCredentialsRequest(user_id="bob"))
        # Providers: a literal secret in a header, a refused header value, resolves.
        providers = ProviderServiceStub(vault.channel("gateway"))
        provider = ppb.Provider(
            name="openai",
            kind=ppb.PROVIDER_KIND_OPENAI,
            base_url="https://api.openai.com/v1",
            headers={
                "Authorization": ppb.HeaderValues(values=["Bearer {{credential:openai_api_key}}"]),
                "X-Api-Key": ppb.HeaderValues(values=[PROVIDER_LITERAL]),
            },
            models=["gpt-4o"],
        )
        await providers.CreateProvider(
            ppb.CreateProviderRequest(user_id="alice", provider=provider)
        )
        await providers.GetProvider(ppb.GetProviderRequest(user_id="alice", name="openai"))
        await providers.ListProviders(ppb.ListProvidersRequest(user_id="alice"))
        bad_provider = ppb.Provider()
        bad_provider.CopyFrom(provider)
        bad_provider.headers["X-Api-Key"].values[0] = PROVIDER_LITERAL + "\n"
        with pytest.raises(grpc.aio.AioRpcError):
            await providers.UpdateProvider(
                ppb.UpdateProviderRequest(user_id="alice", provider=bad_provider)
            )
        await router.Resolve(pb.ResolveRequest(user_id="alice", provider_name="openai"))
        await router.Resolve(pb.ResolveRequest(user_id="alice", model="openai/gpt-4o"))
        tokens = [vault.token("gateway"), vault.token("router")]
        await stub.DeleteCredentials(pb.DeleteCredentialsRequest(user_id="alice"))
        stored += _stored_blobs(vault.settings.database)

    logged = _everything_logged(caplog.records)
    assert "PutCredential" in logged and "CreateProvider" in logged  # the capture saw the vault
    secrets = [*VALUES.values(), *BAD_VALUES, *tokens, PROVIDER_LITERAL]
    secrets += [keyring.primary_key.hex(), keyring.pepper.hex()]
    secrets += [repr(keyring.primary_key), repr(keyring.pepper)]
    secrets += [base64.b64encode(k).decode() for k in (keyring.primary_key, keyring.pepper)]
    for secret in secrets:
        assert secret not in logged
        assert secret[:16] not in logged
    # Nor what the database holds (ciphertexts, wrapped data keys, token digests): aiosqlite
    # would log every statement's parameters at DEBUG.
    assert len(stored) > 10
    for blob in stored:
        assert repr(blob) not in logged and blob.hex() not in logged


def _stored_blobs(database: DatabaseLocation) -> list[bytes]:
    rows = raw_fetch(
        database,
        "SELECT blob FROM credentials UNION ALL SELECT wrapped FROM data_keys"
        " UNION ALL SELECT headers FROM providers UNION ALL SELECT blob FROM master_key_checks",
    )
    return [bytes(row[0]) for row in rows if len(row[0]) > 16]
