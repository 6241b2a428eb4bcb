"""TLS on both sides of the router.

Callers (SPEC 4.2): with mutual TLS a certificate and a token are both needed. Upstreams: the
router connects only to the address the egress policy checked, and verifies the certificate
against the original host name, which it sends as SNI, offering ALPN `http/1.1`.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import Sequence
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
from services.router.egress import EgressPolicy
from services.router.errors import UpstreamUnavailable
from services.router.server import start_router
from services.router.transport import UpstreamClient, UpstreamRequest
from tests.support.fake_upstream import running_upstream
from tests.support.loopback_backend import LoopbackOnlyBackend


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _issue(
    directory: Path,
    stem: str,
    subject: str,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    dns_names: Sequence[str] = (),
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
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                + [x509.DNSName(name) for name in dns_names]
            ),
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


class _TlsUpstream:
    """What an HTTPS upstream on 127.0.0.1 saw of each handshake: SNI and offered ALPN."""

    def __init__(self, directory: Path, cert_names: Sequence[str]) -> None:
        ca = _issue(directory, "upstream-ca", "upstream CA", None, ca=True)
        _issue(directory, "upstream", "upstream", ca, dns_names=cert_names)
        self.ca_file = directory / "upstream-ca.pem"
        self.server_names: list[str | None] = []
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(directory / "upstream.pem", directory / "upstream-key.pem")
        self.context.set_alpn_protocols(["http/1.1"])
        self.context.sni_callback = self._sni

    def _sni(self, sock: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> None:
        self.server_names.append(name)


def _tls_client(
    upstream: _TlsUpstream, backend: LoopbackOnlyBackend, timeout: float = 5
) -> UpstreamClient:
    async def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1"] if host == "llm.test" else []

    return UpstreamClient(
        EgressPolicy.from_setting("llm.test"),
        resolver=resolver,
        network_backend=backend,
        ca_file=str(upstream.ca_file),
        connect_timeout=timeout,
    )


async def _get(client: UpstreamClient, url: str) -> tuple[int, bytes]:
    request = UpstreamRequest("POST", url, [("content-type", "application/json")], b"{}")
    async with client.stream(request, deadline=asyncio.get_running_loop().time() + 5) as answer:
        return answer.status, b"".join([c async for c in answer.chunks()])


async def test_https_upstream_gets_sni_alpn_and_the_checked_address(tmp_path: Path) -> None:
    tls = _TlsUpstream(tmp_path, ["llm.test"])
    backend = LoopbackOnlyBackend()
    client = _tls_client(tls, backend)
    # The client closes first: the test server's TLS shutdown would wait for it otherwise.
    async with running_upstream(tls=tls.context) as upstream:
        try:
            url = f"https://llm.test:{upstream.port}/v1/chat/completions"
            for _ in range(2):  # the second call reuses the connection
                status, body = await _get(client, url)
                assert status == 200 and b"/v1/chat/completions" in body
        finally:
            await client.aclose()
    assert [r.header("host") for r in upstream.requests] == [f"llm.test:{upstream.port}"] * 2
    assert upstream.requests[0].body == b"{}"
    assert upstream.requests[0].alpn == "http/1.1"
    assert backend.connects == [("127.0.0.1", upstream.port)]  # the checked address, once
    assert tls.server_names == ["llm.test"]


async def test_https_upstream_with_a_certificate_for_another_name_is_refused(
    tmp_path: Path,
) -> None:
    tls = _TlsUpstream(tmp_path, ["other.test"])
    client = _tls_client(tls, LoopbackOnlyBackend())
    async with running_upstream(tls=tls.context) as upstream:
        try:
            with pytest.raises(UpstreamUnavailable, match="could not connect"):
                await _get(client, f"https://llm.test:{upstream.port}/")
        finally:
            await client.aclose()
    assert upstream.requests == []


async def test_a_stalled_tls_handshake_is_bounded_by_the_connect_timeout(tmp_path: Path) -> None:
    tls = _TlsUpstream(tmp_path, ["llm.test"])
    client = _tls_client(tls, LoopbackOnlyBackend(), timeout=0.3)
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # accepts TCP, never answers the ClientHello

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(UpstreamUnavailable, match="within 0.3 s"):
            await _get(client, f"https://llm.test:{port}/")
        assert len(accepted) == 1
    finally:
        await client.aclose()
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
