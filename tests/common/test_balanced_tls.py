"""TLS on a balanced channel: `host:port` becomes `dns:///host:port`, whose authority is still
`host:port`, so the server's certificate is checked against `host` as before."""

from __future__ import annotations

import datetime
from pathlib import Path

import grpc
import grpc.aio
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.common.callers import write_private_file
from services.common.grpc_server import ClientTls, TlsFiles, open_channel
from tests.support.grpc_replicas import start_replica

GET_CREDENTIALS = "/aicreds.vault.v1.CredentialService/GetCredentials"


def _name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _certificates(directory: Path, dns_name: str) -> tuple[TlsFiles, ClientTls]:
    """A CA and a server certificate naming `dns_name` only (no address)."""
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    later = now + datetime.timedelta(hours=1)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("test CA"))
        .issuer_name(_name("test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(later)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(dns_name))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(later)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns_name)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (directory / "ca.pem").write_bytes(_pem(ca))
    (directory / "server.pem").write_bytes(_pem(cert))
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_private_file(directory / "server-key.pem", private.decode())
    server = TlsFiles(directory / "server.pem", directory / "server-key.pem")
    return server, ClientTls(directory / "ca.pem")


@pytest.mark.parametrize(("named", "reached"), [("localhost", True), ("aicreds-vault", False)])
async def test_the_certificate_is_checked_against_the_host_of_the_address(
    tmp_path: Path, named: str, reached: bool
) -> None:
    server_tls, client_tls = _certificates(tmp_path, named)
    replica = await start_replica((GET_CREDENTIALS,), tls=server_tls)
    try:
        async with open_channel(f"localhost:{replica.server.port}", "tok", client_tls) as channel:
            assert repr(channel).startswith("CallerChannel(target='dns:///localhost:")
            call = channel.unary_unary(GET_CREDENTIALS)(b"", timeout=5)
            if reached:
                assert await call == b""
            else:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await call
                assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await replica.server.stop(0)
    assert replica.seen[GET_CREDENTIALS] == (1 if reached else 0)
