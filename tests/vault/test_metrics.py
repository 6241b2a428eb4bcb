"""The vault's Prometheus metrics (issue 18 item 1): `/metrics` on `VAULT_METRICS_LISTEN`, read
with Prometheus' own parser, moving by exactly the calls made (on SQLite and PostgreSQL), and
no label value holding a credential, a token, a key name or a user id."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
from aicreds.vault.v1 import auth_pb2 as apb
from aicreds.vault.v1 import credentials_pb2 as cpb
from aicreds.vault.v1 import providers_pb2 as pb
from aicreds.vault.v1.auth_pb2_grpc import AuthServiceStub
from aicreds.vault.v1.credentials_pb2_grpc import CredentialServiceStub
from aicreds.vault.v1.providers_pb2_grpc import ProviderServiceStub

from services.vault.config import VaultSettings
from tests.support.databases import raw_execute
from tests.support.metrics import Scrape, delta, scrape
from tests.support.vault import VaultHandle, running_vault

USER = "user-metrics-9041"
CREDENTIALS = {
    "metrics_key_alpha": "sk-METRICS-alpha-0123456789abcdef",
    "metrics_key_beta": "sk-METRICS-beta-fedcba9876543210",
}
PROVIDER = pb.Provider(
    name="metrics-provider",
    kind=pb.PROVIDER_KIND_OPENAI,
    base_url="https://api.example.com/v1",
    headers={
        "Authorization": pb.HeaderValues(values=["Bearer {{credential:metrics_key_alpha}}"]),
        "X-Beta": pb.HeaderValues(values=["{{credential:metrics_key_beta}}"]),
    },
    models=["metrics-model"],
)
PREFIX = "aicreds_vault_"
RESOLVE = "/aicreds.vault.v1.CredentialService/Resolve"
AUTHENTICATE = "/aicreds.vault.v1.AuthService/Authenticate"


@pytest.fixture
async def vault(tmp_path: Path) -> AsyncIterator[VaultHandle]:
    async with running_vault(tmp_path, env={"VAULT_METRICS_LISTEN": "127.0.0.1:0"}) as handle:
        await CredentialServiceStub(handle.channel("gateway")).ReplaceCredentials(
            cpb.ReplaceCredentialsRequest(user_id=USER, credentials=CREDENTIALS)
        )
        await ProviderServiceStub(handle.channel("gateway")).CreateProvider(
            pb.CreateProviderRequest(user_id=USER, provider=PROVIDER)
        )
        yield handle


def _port(vault: VaultHandle) -> int:
    assert vault.running.server.metrics is not None
    return vault.running.server.metrics.port


async def _code(call: object) -> str:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as err:
        code: grpc.StatusCode = err.code()
        return str(code.name)
    return "OK"


async def test_metrics_count_rpcs_batches_and_errors_exactly(vault: VaultHandle) -> None:
    router = CredentialServiceStub(vault.channel("router"))
    auth = AuthServiceStub(vault.channel("gateway"))
    created = await auth.CreateToken(apb.CreateTokenRequest(user_id=USER, name="metrics"))
    before = await scrape(_port(vault))

    for _ in range(3):
        resolved = await router.Resolve(
            cpb.ResolveRequest(user_id=USER, provider_name="metrics-provider")
        )
        assert dict(resolved.values) == CREDENTIALS
    unknown = cpb.ResolveRequest(user_id=USER, provider_name="nope")
    assert await _code(router.Resolve(unknown)) == "NOT_FOUND"
    # The gateway may not Resolve: denied by the interceptor, and counted all the same.
    gateway = CredentialServiceStub(vault.channel("gateway"))
    assert await _code(gateway.Resolve(unknown)) == "PERMISSION_DENIED"
    for _ in range(2):
        assert await _code(auth.Authenticate(apb.AuthenticateRequest(token=created.token))) == "OK"
    middle = await scrape(_port(vault))

    requests = PREFIX + "grpc_requests_total"
    assert delta(before, middle, requests, method=RESOLVE, code="OK") == 3
    assert delta(before, middle, requests, method=RESOLVE, code="NOT_FOUND") == 1
    assert delta(before, middle, requests, method=RESOLVE, code="PERMISSION_DENIED") == 1
    assert delta(before, middle, requests, method=AUTHENTICATE, code="OK") == 2
    assert delta(before, middle, requests) == 7
    latency = PREFIX + "grpc_request_duration_seconds_count"
    assert delta(before, middle, latency, method=RESOLVE) == 5
    assert delta(before, middle, latency, method=AUTHENTICATE) == 2
    assert middle.value(PREFIX + "grpc_requests_in_flight") == 0
    # Each Resolve is audited, the failed ones too: every row went through a group commit.
    batches = PREFIX + "audit_batch_rows_count"
    rows = PREFIX + "audit_batch_rows_sum"
    assert delta(before, middle, batches) >= 1
    assert delta(before, middle, rows) >= 4
    assert delta(before, middle, PREFIX + "decrypt_errors_total") == 0
    assert delta(before, middle, PREFIX + "integrity_errors_total") == 0
    assert middle.value(PREFIX + "master_keys", role="primary") == 1

    # A value moved under another key (by someone without the keyring) no longer opens.
    changed = raw_execute(
        vault.settings.database,
        "UPDATE credentials SET blob = (SELECT blob FROM credentials WHERE user_id = ? AND"
        " key = ?) WHERE user_id = ? AND key = ?",
        (USER, "metrics_key_alpha", USER, "metrics_key_beta"),
    )
    assert changed == 1
    by_name = cpb.ResolveRequest(user_id=USER, provider_name="metrics-provider")
    assert await _code(router.Resolve(by_name)) == "INTERNAL"
    after = await scrape(_port(vault))
    assert delta(middle, after, requests, method=RESOLVE, code="INTERNAL") == 1
    assert delta(middle, after, PREFIX + "decrypt_errors_total", blob="value") == 1
    assert delta(middle, after, PREFIX + "integrity_errors_total", row_kind="credential") == 1

    secrets = [USER, created.token, created.info.id, *CREDENTIALS, *CREDENTIALS.values()]
    secrets += [vault.token(name) for name in vault.files.tokens]
    assert after.leaks(secrets) == []


async def test_metrics_hold_every_family(vault: VaultHandle) -> None:
    scraped: Scrape = await scrape(_port(vault))
    for family in (
        "grpc_requests",
        "grpc_request_duration_seconds",
        "grpc_requests_in_flight",
        "audit_batch_rows",
        "decrypt_errors",
        "integrity_errors",
        "master_keys",
    ):
        assert PREFIX + family in scraped.families


@pytest.mark.no_store
def test_no_metrics_endpoint_unless_configured() -> None:
    assert VaultSettings.from_env({}).metrics_listen is None
    assert VaultSettings.from_env({"VAULT_METRICS_LISTEN": "[::1]:9464"}).metrics_listen
    with pytest.raises(ValueError, match="VAULT_METRICS_LISTEN"):
        VaultSettings.from_env({"VAULT_METRICS_LISTEN": "9464"})
