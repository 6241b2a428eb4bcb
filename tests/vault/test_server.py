"""The vault process: health and reflection, TLS and mutual TLS, refusals, SIGTERM."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import os
import signal
import sys
import time
from pathlib import Path

import grpc
import grpc.aio
import pytest
from aicreds.vault.v1 import credentials_pb2 as pb
from aicreds.vault.v1.credentials_pb2_grpc import CredentialServiceStub
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.callers import write_private_file
from services.common.grpc_server import ClientTls, open_channel
from services.vault.config import VaultSettings
from services.vault.server import start_vault
from services.vault.store.location import PostgresUrl
from tests.support.vault import prepare_vault_files, running_vault

REPO = Path(__file__).resolve().parents[2]


async def test_health_reports_every_vault_service_serving(tmp_path: Path) -> None:
    async with running_vault(tmp_path) as vault:
        health = health_pb2_grpc.HealthStub(vault.channel(None))  # open to everyone
        for service in (
            "",
            "aicreds.vault.v1.CredentialService",
            "aicreds.vault.v1.ProviderService",
        ):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, service


def _issue(
    directory: Path,
    stem: str,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, stem)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0].subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    cert = builder.sign(issuer[1] if issuer else key, hashes.SHA256())
    (directory / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_private_file(directory / f"{stem}-key.pem", pem.decode())
    return cert, key


async def test_mutual_tls_needs_a_trusted_client_certificate_and_a_token(tmp_path: Path) -> None:
    ca = _issue(tmp_path, "ca", None)
    _issue(tmp_path, "server", ca)
    _issue(tmp_path, "client", ca)
    _issue(tmp_path, "stranger", _issue(tmp_path, "other-ca", None))
    files = prepare_vault_files(tmp_path)
    env = {
        **files.env(),
        "VAULT_TLS_CERT": str(tmp_path / "server.pem"),
        "VAULT_TLS_KEY": str(tmp_path / "server-key.pem"),
        "VAULT_TLS_CLIENT_CA": str(tmp_path / "ca.pem"),
    }
    running = await start_vault(VaultSettings.from_env(env))
    target = f"127.0.0.1:{running.port}"
    request = pb.GetCredentialsRequest(user_id="alice")

    def tls(client: str | None) -> ClientTls:
        if client is None:
            return ClientTls(ca=tmp_path / "ca.pem")
        return ClientTls(
            tmp_path / "ca.pem", tmp_path / f"{client}.pem", tmp_path / f"{client}-key.pem"
        )

    try:
        async with open_channel(target, files.token("gateway"), tls("client")) as channel:
            reply = await CredentialServiceStub(channel).GetCredentials(request, timeout=5)
            assert dict(reply.credentials) == {}
        for client in (None, "stranger"):
            async with open_channel(target, files.token("gateway"), tls(client)) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await CredentialServiceStub(channel).GetCredentials(request, timeout=5)
                assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        async with open_channel(target, "not-a-caller", tls("client")) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await CredentialServiceStub(channel).GetCredentials(request, timeout=5)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        async with grpc.aio.insecure_channel(target) as plain:
            with pytest.raises(grpc.aio.AioRpcError):
                await CredentialServiceStub(plain).GetCredentials(request, timeout=5)
    finally:
        await running.stop(0)


@pytest.mark.no_store
def test_settings_defaults_and_errors() -> None:
    settings = VaultSettings.from_env({})
    assert settings.listen == "127.0.0.1:50051"
    assert settings.database == Path(".state/vault.db")
    assert settings.keyring_file == Path(".state/master-keys.json")
    assert settings.callers_file == Path(".state/vault-callers.json")
    assert settings.generate_dev_key is False and settings.tls is None
    assert VaultSettings.from_env({"STATE_DIR": "/s"}).database == Path("/s/vault.db")
    with pytest.raises(ValueError, match="VAULT_GENERATE_DEV_KEY"):
        VaultSettings.from_env({"VAULT_GENERATE_DEV_KEY": "maybe"})
    with pytest.raises(ValueError, match="VAULT_TLS_KEY"):
        VaultSettings.from_env({"VAULT_TLS_CERT": "/c.pem"})


@pytest.mark.no_store
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/var/lib/vault/vault.db", Path("/var/lib/vault/vault.db")),
        ("relative/vault.db", Path("relative/vault.db")),
        ("sqlite:///var/lib/vault/vault.db", Path("var/lib/vault/vault.db")),
        ("sqlite:////var/lib/vault/vault.db", Path("/var/lib/vault/vault.db")),
        (
            "postgresql://vault@db.internal:5432/aicreds",
            PostgresUrl("postgresql://vault@db.internal:5432/aicreds"),
        ),
        (
            "postgres://vault@db.internal/aicreds",
            PostgresUrl("postgres://vault@db.internal/aicreds"),
        ),
        (
            "postgresql://vault:pw@db.internal/aicreds?sslmode=verify-full",
            PostgresUrl("postgresql://vault:pw@db.internal/aicreds?sslmode=verify-full"),
        ),
    ],
)
def test_vault_database_names_a_sqlite_file_or_a_postgresql_url(
    value: str, expected: Path | PostgresUrl
) -> None:
    settings = VaultSettings.from_env({"VAULT_DATABASE": value})
    assert settings.database == expected
    assert (settings.database_pool_size, settings.database_statement_timeout_ms) == (10, 5000)


@pytest.mark.no_store
@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("mysql://vault@db/aicreds", "unknown scheme 'mysql'"),
        ("sqlite://", "sqlite:///path"),
        ("sqlite:///", "sqlite:///path"),
        ("postgresql://vault:s3cretpw@db.internal:5432", "names no database"),
        ("postgresql://vault:s3cretpw@db.internal:5432/", "names no database"),
    ],
)
def test_a_bad_vault_database_is_refused_without_its_password(value: str, message: str) -> None:
    with pytest.raises(ValueError, match="VAULT_DATABASE") as info:
        VaultSettings.from_env({"VAULT_DATABASE": value})
    assert message in str(info.value)
    assert "s3cretpw" not in str(info.value)


@pytest.mark.no_store
def test_a_postgresql_url_with_a_bad_port_is_refused_naming_the_setting() -> None:
    with pytest.raises(ValueError, match="VAULT_DATABASE: not a valid PostgreSQL URL") as info:
        VaultSettings.from_env(
            {"VAULT_DATABASE": "postgresql://vault:s3cretpw@db.internal:port/aicreds"}
        )
    assert "s3cretpw" not in str(info.value)


@pytest.mark.no_store
def test_the_database_pool_size_and_statement_timeout_are_positive_integers() -> None:
    settings = VaultSettings.from_env(
        {"VAULT_DATABASE_POOL_SIZE": "4", "VAULT_DATABASE_STATEMENT_TIMEOUT_MS": "250"}
    )
    assert (settings.database_pool_size, settings.database_statement_timeout_ms) == (4, 250)
    for name in ("VAULT_DATABASE_POOL_SIZE", "VAULT_DATABASE_STATEMENT_TIMEOUT_MS"):
        for bad in ("0", "-1", "many"):
            with pytest.raises(ValueError, match=name):
                VaultSettings.from_env({name: bad})


@pytest.mark.no_store
def test_a_postgresql_url_shows_its_password_masked() -> None:
    settings = VaultSettings.from_env(
        {"VAULT_DATABASE": "postgresql://vault:s3cretpw@db.internal:5432/aicreds"}
    )
    for shown in (str(settings.database), repr(settings.database), repr(settings)):
        assert "s3cretpw" not in shown
    assert str(settings.database) == "postgresql://vault:***@db.internal:5432/aicreds"


async def _spawn(env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    with log.open("wb") as stderr:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.vault.server",
            cwd=REPO,
            env={**os.environ, **env},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr,
        )


async def test_the_process_refuses_a_missing_key_file_and_says_what_to_do(tmp_path: Path) -> None:
    files = prepare_vault_files(tmp_path)
    files.keyring_file.unlink()
    process = await _spawn(files.env(), tmp_path / "vault.log")
    assert await asyncio.wait_for(process.wait(), 30) != 0
    output = (tmp_path / "vault.log").read_text()
    assert "refusing to start" in output
    assert "VAULT_GENERATE_DEV_KEY=true" in output


async def test_the_process_generates_a_dev_key_and_stops_cleanly_on_sigterm(
    tmp_path: Path,
) -> None:
    files = prepare_vault_files(tmp_path)
    files.keyring_file.unlink()
    env = {**files.env(), "VAULT_GENERATE_DEV_KEY": "true", "VAULT_LOG_LEVEL": "INFO"}
    log = tmp_path / "vault.log"
    process = await _spawn(env, log)
    deadline = time.monotonic() + 20
    lines: list[dict[str, object]] = []
    while time.monotonic() < deadline and not any(
        line.get("message") == "vault serving" for line in lines
    ):
        await asyncio.sleep(0.05)
        lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert any(
        line.get("level") == "WARNING" and "DEVELOPMENT" in str(line["message"]) for line in lines
    )
    assert files.keyring_file.stat().st_mode & 0o777 == 0o600
    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), 30) == 0
