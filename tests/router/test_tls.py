"""Mutual TLS for the router's callers (SPEC 4.2): a certificate and a token are both needed."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import grpc
import grpc.aio
import pytest
from aicreds.router.v1 import router_pb2, router_pb2_grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.common.callers import write_callers_file, write_private_file
from services.common.grpc_server import ClientTls, TlsFiles, open_channel
from services.router.config import RouterSettings
from services.router.server import start_router


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _issue(
    directory: Path,
    stem: str,
    subject: str,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer[0].subject if issuer else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    cert = builder.sign(issuer[1] if issuer else key, hashes.SHA256())
    (directory / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    write_private_file(
        directory / f"{stem}-key.pem",
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode(),
    )
    return cert, key


async def test_mutual_tls_needs_a_client_certificate(tmp_path: Path) -> None:
    ca = _issue(tmp_path, "ca", "test CA", None, ca=True)
    _issue(tmp_path, "server", "router", ca)
    _issue(tmp_path, "client", "agent", ca)
    other_ca = _issue(tmp_path, "other-ca", "other CA", None, ca=True)
    _issue(tmp_path, "stranger", "stranger", other_ca)
    write_callers_file(tmp_path / "callers.json", {"agent": ("tok-agent", ["invoke"])})
    write_private_file(tmp_path / "vault.token", "svc-token")
    settings = RouterSettings(
        listen="127.0.0.1:0",
        vault_addr="127.0.0.1:1",  # nothing there: the call gets as far as the vault
        vault_token_file=tmp_path / "vault.token",
        callers_file=tmp_path / "callers.json",
        tls=TlsFiles(tmp_path / "server.pem", tmp_path / "server-key.pem", tmp_path / "ca.pem"),
        vault_timeout=0.5,
    )
    router = await start_router(settings)
    target = f"127.0.0.1:{router.port}"
    request = router_pb2.PreviewRequest(user_id="u", provider_name="p")
    try:
        good = ClientTls(tmp_path / "ca.pem", tmp_path / "client.pem", tmp_path / "client-key.pem")
        async with open_channel(target, "tok-agent", good) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await router_pb2_grpc.RouterServiceStub(channel).Preview(request, timeout=5)
            # Through TLS and caller auth; it is the (absent) vault that fails the call.
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "vault" in (caught.value.details() or "")

        for tls in (
            ClientTls(tmp_path / "ca.pem"),  # no client certificate
            ClientTls(
                tmp_path / "ca.pem", tmp_path / "stranger.pem", tmp_path / "stranger-key.pem"
            ),
        ):
            async with open_channel(target, "tok-agent", tls) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await router_pb2_grpc.RouterServiceStub(channel).Preview(request, timeout=5)
                assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "vault" not in (caught.value.details() or "")

        async with open_channel(target, "tok-wrong", good) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await router_pb2_grpc.RouterServiceStub(channel).Preview(request, timeout=5)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await router.stop(0)
