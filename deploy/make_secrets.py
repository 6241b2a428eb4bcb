#!/usr/bin/env python3
"""Generate the secrets a containerised aicreds needs (docker-compose and Kubernetes).

    .venv/bin/python deploy/make_secrets.py deploy/secrets [--namespace aicreds]

writes, each mode 0600 (Python and the `cryptography` package, which aicreds depends on):

    master-keys.json     the vault's master keyring (one random key "k1" and a token pepper)
    vault-callers.json   SHA-256 digests of the vault's callers: gateway (manage), router (resolve)
    router-callers.json  SHA-256 digests of the router's callers: gateway (invoke)
    router-vault.token   the router's caller token at the vault
    gateway-vault.token  the gateway's caller token at the vault
    gateway-router.token the gateway's caller token at the router
    ca.crt               a private CA for the traffic between the services (its key is not kept)
    vault.crt, .key      the vault's certificate: server, and client for its own health check
    router.crt, .key     the router's: server, and client at the vault (mutual TLS)
    gateway.crt, .key    the gateway's: client at the vault and the router (mutual TLS)
    postgres.env         AICREDS_POSTGRES_PASSWORD and AICREDS_REDIS_PASSWORD, the database's
                         and Redis's passwords in the compose override compose.postgres.yml
                         (`docker compose --env-file`)
    k8s-secrets.yaml     the same, as the Secrets deploy/k8s expects (`kubectl apply -f`):
                         aicreds-{vault,router,gateway} and, in cert-manager's layout
                         (tls.crt, tls.key, ca.crt), aicreds-{vault,router,gateway}-tls; and
                         aicreds-redis (keys password, url) with postgres.env's Redis password,
                         for the overlay deploy/k8s-overlays/postgres

Certificates name the compose services (vault, router, gateway), the Kubernetes Services
(aicreds-vault, ...svc, ...svc.cluster.local in --namespace) and localhost/127.0.0.1 (health
checks inside a container, tests on one machine); they are valid for CERT_DAYS days.
`--renew-tls` writes a new CA and new certificates and leaves the keyring, tokens and passwords
alone.

It refuses to overwrite an existing keyring: a new keyring cannot decrypt the old database.
Keep these files out of version control (deploy/.gitignore ignores deploy/secrets/).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import ipaddress
import json
import os
import secrets
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
except ImportError:
    sys.exit(
        "make_secrets.py needs the `cryptography` package for the TLS certificates: run it "
        "with aicreds' virtual environment (make venv; .venv/bin/python deploy/make_secrets.py)"
    )

# caller token file -> (server callers file, caller name, rights)
CALLERS = {
    "gateway-vault.token": ("vault-callers.json", "gateway", ["manage"]),
    "router-vault.token": ("vault-callers.json", "router", ["resolve"]),
    "gateway-router.token": ("router-callers.json", "gateway", ["invoke"]),
}
# Kubernetes Secret name -> the files it holds (see deploy/k8s/*.yaml for where they are mounted)
K8S_SECRETS = {
    "aicreds-vault": ["master-keys.json", "vault-callers.json"],
    "aicreds-router": ["router-callers.json", "router-vault.token"],
    "aicreds-gateway": ["gateway-vault.token", "gateway-router.token"],
}
# The compose override's database and Redis passwords (compose.postgres.yml interpolates them);
# hex, so that they need no escaping in VAULT_DATABASE's and GATEWAY_REDIS_URL's URLs.
POSTGRES_ENV_FILE = "postgres.env"
POSTGRES_PASSWORD_VARIABLE = "AICREDS_POSTGRES_PASSWORD"
REDIS_PASSWORD_VARIABLE = "AICREDS_REDIS_PASSWORD"
# The PostgreSQL overlay's Redis Secret: the server's password and the gateways' URL to it.
K8S_REDIS_SECRET = "aicreds-redis"
K8S_REDIS_ADDRESS = "aicreds-redis:6379/0"
# service -> may it serve TLS (serverAuth) besides being a client (clientAuth)
TLS_SERVICES = {"vault": True, "router": True, "gateway": False}
CERT_DAYS = 825  # the longest lifetime Apple's TLS policy accepts; renew with --renew-tls
CA_DAYS = 3650


def _b64_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def new_keyring() -> dict[str, object]:
    """A keyring with one random 256-bit master key and a random 256-bit token pepper."""
    return {"version": 1, "primary": "k1", "keys": {"k1": _b64_key()}, "pepper": _b64_key()}


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(path, 0o600)


def dns_names(service: str, namespace: str) -> list[str]:
    """The names a service is reached by: compose, Kubernetes, and on the same host."""
    k8s = f"aicreds-{service}"
    return [
        service,
        k8s,
        f"{k8s}.{namespace}",
        f"{k8s}.{namespace}.svc",
        f"{k8s}.{namespace}.svc.cluster.local",
        "localhost",
    ]


def new_tls(namespace: str) -> dict[str, str]:
    """A fresh CA (P-256, its key discarded) and one certificate and key per service (PEM)."""
    now = datetime.now(UTC) - timedelta(minutes=5)  # tolerate a little clock skew

    def name(common_name: str) -> Any:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "aicreds"),
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            ]
        )

    def key_pem(key: Any) -> str:
        return str(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ).decode("ascii")
        )

    def usage(*, ca: bool) -> Any:
        return x509.KeyUsage(
            digital_signature=not ca,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=ca,
            crl_sign=ca,
            encipher_only=False,
            decipher_only=False,
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = name("aicreds internal CA")
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage(ca=True), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    files = {"ca.crt": ca_cert.public_bytes(pem).decode("ascii")}
    for service, serves in TLS_SERVICES.items():
        key = ec.generate_private_key(ec.SECP256R1())
        purposes = [ExtendedKeyUsageOID.CLIENT_AUTH]
        if serves:
            purposes.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
        san: list[Any] = [x509.DNSName(n) for n in dns_names(service, namespace)]
        san.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(service))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + timedelta(days=CERT_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage(ca=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(purposes), critical=False)
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        files[f"{service}.crt"] = cert.public_bytes(pem).decode("ascii")
        files[f"{service}.key"] = key_pem(key)
    return files


def _k8s_secret(name: str, namespace: str, data: dict[str, str], kind: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": kind,
        "data": {k: base64.b64encode(v.encode("utf-8")).decode("ascii") for k, v in data.items()},
    }


def env_file_values(text: str) -> dict[str, str]:
    """NAME=value lines of an env file (postgres.env)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and not name.startswith("#"):
            values[name.strip()] = value.strip()
    return values


def k8s_secrets(files: dict[str, str], namespace: str) -> str:
    """The Secrets deploy/k8s mounts, as one multi-document YAML (JSON is YAML), and the
    overlay's aicreds-redis when postgres.env holds a Redis password."""
    docs = [
        _k8s_secret(secret, namespace, {n: files[n] for n in names}, "Opaque")
        for secret, names in K8S_SECRETS.items()
    ]
    for service in TLS_SERVICES:
        tls = {
            "tls.crt": files[f"{service}.crt"],
            "tls.key": files[f"{service}.key"],
            "ca.crt": files["ca.crt"],
        }
        docs.append(_k8s_secret(f"aicreds-{service}-tls", namespace, tls, "kubernetes.io/tls"))
    password = env_file_values(files.get(POSTGRES_ENV_FILE, "")).get(REDIS_PASSWORD_VARIABLE)
    if password:
        redis = {"password": password, "url": f"redis://:{password}@{K8S_REDIS_ADDRESS}"}
        docs.append(_k8s_secret(K8S_REDIS_SECRET, namespace, redis, "Opaque"))
    return "".join("---\n" + json.dumps(d, indent=2) + "\n" for d in docs)


def _write_all(out: Path, files: dict[str, str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    for name, text in files.items():
        _write_private(out / name, text)


def renew_tls(out: Path, namespace: str) -> dict[str, str]:
    """Replace the CA and certificates in `out`, keeping the keyring and caller tokens."""
    files = {n: (out / n).read_text(encoding="utf-8") for n in _secret_file_names()}
    if (out / POSTGRES_ENV_FILE).exists():  # for aicreds-redis in k8s-secrets.yaml
        files[POSTGRES_ENV_FILE] = (out / POSTGRES_ENV_FILE).read_text(encoding="utf-8")
    files.update(new_tls(namespace))
    files["k8s-secrets.yaml"] = k8s_secrets(files, namespace)
    _write_all(out, files)
    return files


def _secret_file_names() -> list[str]:
    names = ["master-keys.json"]
    for token_file, (callers_file, _, _) in CALLERS.items():
        names += [token_file, callers_file]
    return sorted(set(names))


def generate(out: Path, namespace: str) -> dict[str, str]:
    """Write every file into `out`; returns file name -> content."""
    files: dict[str, str] = {
        "master-keys.json": json.dumps(new_keyring(), indent=2) + "\n",
    }
    callers: dict[str, list[dict[str, object]]] = {}
    for token_file, (callers_file, name, rights) in CALLERS.items():
        token = "svc-" + secrets.token_urlsafe(32)
        files[token_file] = token + "\n"
        digest = hashlib.sha256(token.encode("utf-8")).hexdigest()
        callers.setdefault(callers_file, []).append(
            {"name": name, "token_sha256": digest, "rights": rights}
        )
    for callers_file, entries in callers.items():
        files[callers_file] = json.dumps({"callers": entries}, indent=2) + "\n"
    files[POSTGRES_ENV_FILE] = (
        f"{POSTGRES_PASSWORD_VARIABLE}={secrets.token_hex(32)}\n"
        f"{REDIS_PASSWORD_VARIABLE}={secrets.token_hex(32)}\n"
    )
    files.update(new_tls(namespace))
    files["k8s-secrets.yaml"] = k8s_secrets(files, namespace)
    _write_all(out, files)
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="directory to write (e.g. deploy/secrets)")
    parser.add_argument("--namespace", default="aicreds", help="Kubernetes namespace")
    parser.add_argument("--force", action="store_true", help="overwrite an existing keyring")
    parser.add_argument(
        "--renew-tls",
        action="store_true",
        help="replace only the CA and certificates of an existing directory",
    )
    args = parser.parse_args(argv)
    if args.renew_tls:
        if not (args.out / "master-keys.json").exists():
            print(f"{args.out} holds no secrets to renew the certificates of", file=sys.stderr)
            return 1
        renew_tls(args.out, args.namespace)
        print(f"wrote a new CA and certificates to {args.out}; restart the three services")
        return 0
    if (args.out / "master-keys.json").exists() and not args.force:
        print(
            f"{args.out / 'master-keys.json'} exists; a new keyring cannot read the old "
            "database. Use --force only for a fresh deployment.",
            file=sys.stderr,
        )
        return 1
    generate(args.out, args.namespace)
    print(f"wrote {', '.join(sorted(p.name for p in args.out.iterdir()))} to {args.out}")
    if hasattr(os, "getuid") and os.getuid() != 10001:
        print(
            "docker-compose bind-mounts these files into containers running as uid 10001: "
            f"on Linux run  sudo chown -R 10001:10001 {args.out}",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
