"""TLS between the services in the shipped deployments (compose and Kubernetes).

make_secrets.py's CA and certificates are checked as a TLS client would check them, the
manifests are checked to leave no gRPC channel in plaintext, and the three services are started
as processes with the compose file's own TLS settings (addresses moved to 127.0.0.1) and serve a
REST call and a model call.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.x509.oid import ExtendedKeyUsageOID

from services.healthcheck import grpc_serving
from tests.deploy.compose_env import (
    SERVICES,
    host_healthcheck,
    host_ports,
    on_host,
    secret_files,
)
from tests.deploy.manifests import (
    DEPLOY,
    compose_environment,
    k8s_environment,
    load_compose,
    render_kustomization,
)

# The gRPC channels between the services: client, the variable prefix it dials with, server.
CHANNELS = [
    ("router", "ROUTER_VAULT", "vault"),
    ("gateway", "GATEWAY_VAULT", "vault"),
    ("gateway", "GATEWAY_ROUTER", "router"),
]
GRPC_SERVERS = ("vault", "router")


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tls") / "secrets"
    subprocess.run(
        [sys.executable, str(DEPLOY / "make_secrets.py"), str(out), "--namespace", "ops"],
        check=True,
        capture_output=True,
    )
    return out


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_certificates_chain_to_the_ca_and_name_every_address(secrets_dir: Path) -> None:
    ca = _cert(secrets_dir / "ca.crt")
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert not (secrets_dir / "ca.key").exists(), "the CA key is not kept"
    now = datetime.now(UTC)
    for service in SERVICES:
        cert = _cert(secrets_dir / f"{service}.crt")
        cert.verify_directly_issued_by(ca)
        assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        assert usage.digital_signature and not usage.key_cert_sign
        purposes = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
        serves = service in GRPC_SERVERS
        assert (ExtendedKeyUsageOID.SERVER_AUTH in purposes) == serves
        assert ExtendedKeyUsageOID.CLIENT_AUTH in purposes
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = set(san.get_values_for_type(x509.DNSName))
        assert {
            service,
            f"aicreds-{service}",
            f"aicreds-{service}.ops.svc",
            f"aicreds-{service}.ops.svc.cluster.local",
            "localhost",
        } <= names
        assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
        assert cert.not_valid_before_utc <= now
        lifetime = cert.not_valid_after_utc - now
        assert timedelta(days=365) < lifetime <= timedelta(days=826), lifetime
        assert cert.not_valid_after_utc <= ca.not_valid_after_utc
        # The key in <service>.key is the certificate's.
        key = load_pem_private_key((secrets_dir / f"{service}.key").read_bytes(), None)
        assert key.public_key() == cert.public_key()


def test_renew_tls_replaces_certificates_and_keeps_keyring_and_tokens(tmp_path: Path) -> None:
    out = tmp_path / "s"
    run = [sys.executable, str(DEPLOY / "make_secrets.py"), str(out)]
    subprocess.run(run, check=True, capture_output=True)
    kept = {n: (out / n).read_text() for n in ("master-keys.json", "router-vault.token")}
    old_ca = (out / "ca.crt").read_text()
    subprocess.run([*run, "--renew-tls"], check=True, capture_output=True)
    assert {n: (out / n).read_text() for n in kept} == kept
    assert (out / "ca.crt").read_text() != old_ca
    _cert(out / "vault.crt").verify_directly_issued_by(_cert(out / "ca.crt"))


def _assert_every_channel_is_mutual_tls(envs: dict[str, dict[str, str]], where: str) -> None:
    for server in GRPC_SERVERS:
        env = envs[server]
        prefix = server.upper()
        for name in ("TLS_CERT", "TLS_KEY", "TLS_CLIENT_CA"):
            assert env.get(f"{prefix}_{name}"), f"{where}: {server} has no {prefix}_{name}"
    for client, prefix, server in CHANNELS:
        env = envs[client]
        assert env.get(f"{prefix}_ADDR"), f"{where}: {client} does not dial {server}"
        for name in ("CA", "CERT", "KEY"):
            assert env.get(f"{prefix}_TLS_{name}"), (
                f"{where}: {client} -> {server} lacks {prefix}_TLS_{name} (plaintext gRPC)"
            )
    # No other backend address is dialled without TLS.
    for env in envs.values():
        for key in env:
            if key.endswith("_ADDR"):
                assert f"{key.removesuffix('_ADDR')}_TLS_CA" in env, f"{where}: {key}"


def test_compose_runs_every_grpc_channel_over_mutual_tls() -> None:
    compose = load_compose()
    envs = {s: compose_environment(compose["services"][s]) for s in SERVICES}
    _assert_every_channel_is_mutual_tls(envs, "docker-compose.yml")
    files = secret_files()
    for service in SERVICES:
        for key, value in envs[service].items():
            if "_TLS_" in key:
                secret = value.removeprefix("/run/secrets/")
                assert secret in compose["services"][service]["secrets"], key
                assert files[secret] in {"ca.crt", f"{service}.crt", f"{service}.key"}, key
        if service in GRPC_SERVERS:
            check = compose["services"][service]["healthcheck"]["test"]
            assert {"--tls-ca", "--tls-cert", "--tls-key"} <= set(check)


def test_kubernetes_runs_every_grpc_channel_over_mutual_tls() -> None:
    envs = k8s_environment(render_kustomization())
    _assert_every_channel_is_mutual_tls({s: envs[s] for s in SERVICES}, "deploy/k8s")


# --- the services, as processes, with the compose file's TLS settings -------------------------


@contextmanager
def _process(
    command: list[str], env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_healthy(
    service: str, args: list[str], process: subprocess.Popen[bytes], log: Path
) -> None:
    deadline = time.monotonic() + 60
    command = [sys.executable, "-m", "services.healthcheck", *args]
    while True:
        if process.poll() is not None:
            pytest.fail(f"{service} exited ({process.returncode}):\n{log.read_text()[-4000:]}")
        if subprocess.run(command, capture_output=True, check=False).returncode == 0:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{service} not healthy in time:\n{log.read_text()[-4000:]}")
        time.sleep(0.3)


def _base_env() -> dict[str, str]:
    prefixes = ("VAULT_", "ROUTER_", "GATEWAY_", "STATE_DIR")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


@pytest.mark.timeout(180)
def test_the_services_serve_over_the_compose_files_tls_settings(
    secrets_dir: Path, tmp_path: Path
) -> None:
    from devtools.demo import RecordingUpstream, run_flow

    ports = host_ports()
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    bin_dir = Path(sys.executable).parent
    envs: dict[str, dict[str, str]] = {}
    for service in SERVICES:
        envs[service] = {
            **_base_env(),
            **on_host(service, ports, secrets_dir=secrets_dir, state_dir=state),
        }
    # The one deliberate difference from compose: the router may reach the fake upstream.
    envs["router"]["ROUTER_EGRESS_ALLOW"] = "127.0.0.1"
    with ExitStack() as stack, RecordingUpstream() as upstream:
        for service in SERVICES:
            log = tmp_path / f"{service}.log"
            process = stack.enter_context(
                _process([str(bin_dir / f"aicreds-{service}")], envs[service], log)
            )
            _wait_healthy(service, host_healthcheck(service, ports, secrets_dir), process, log)

        # The gRPC ports refuse plaintext and a TLS client without a certificate of the CA.
        for server in GRPC_SERVERS:
            target = f"127.0.0.1:{ports[server]}"
            assert grpc_serving(target, timeout=2) is not None
            assert grpc_serving(target, timeout=2, tls_ca=secrets_dir / "ca.crt") is not None
            assert (
                grpc_serving(
                    target,
                    timeout=2,
                    tls_ca=secrets_dir / "ca.crt",
                    tls_cert=secrets_dir / "gateway.crt",
                    tls_key=secrets_dir / "gateway.key",
                )
                is None
            )

        admin = subprocess.run(
            [str(bin_dir / "aicreds-admin"), "create-token", "--user", "demo"],
            env=envs["vault"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert admin.returncode == 0, admin.stderr
        token = admin.stdout.strip()
        gateway = f"http://127.0.0.1:{ports['gateway']}"
        # A REST call (vault over mTLS) and a model call (router, then vault, over mTLS).
        listed = httpx.get(
            f"{gateway}/api/v2/users/me/ai-credentials",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert listed.status_code == 200, listed.text
        failures: Any = run_flow(gateway, token, upstream)
        assert failures == []
        assert upstream.received, "the model call reached the upstream"
