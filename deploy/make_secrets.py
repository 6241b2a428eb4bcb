#!/usr/bin/env python3
"""Generate the secrets a containerised aicreds needs (docker-compose and Kubernetes).

    python3 deploy/make_secrets.py deploy/secrets [--namespace aicreds]

writes, each mode 0600 (plain Python, no dependencies):

    master-keys.json     the vault's master keyring (one random key "k1" and a token pepper)
    vault-callers.json   SHA-256 digests of the vault's callers: gateway (manage), router (resolve)
    router-callers.json  SHA-256 digests of the router's callers: gateway (invoke)
    router-vault.token   the router's caller token at the vault
    gateway-vault.token  the gateway's caller token at the vault
    gateway-router.token the gateway's caller token at the router
    k8s-secrets.yaml     the same, as the three Secrets deploy/k8s expects (`kubectl apply -f`)

It refuses to overwrite an existing keyring: a new keyring cannot decrypt the old database.
Keep these files out of version control (deploy/.gitignore ignores deploy/secrets/).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import secrets
import sys
from pathlib import Path

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
    docs = []
    for secret, names in K8S_SECRETS.items():
        data = {n: base64.b64encode(files[n].encode("utf-8")).decode("ascii") for n in names}
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": secret, "namespace": namespace},
                "type": "Opaque",
                "data": data,
            }
        )
    # JSON is YAML: no PyYAML needed.
    files["k8s-secrets.yaml"] = "".join("---\n" + json.dumps(d, indent=2) + "\n" for d in docs)
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    for name, text in files.items():
        _write_private(out / name, text)
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="directory to write (e.g. deploy/secrets)")
    parser.add_argument("--namespace", default="aicreds", help="Kubernetes namespace")
    parser.add_argument("--force", action="store_true", help="overwrite an existing keyring")
    args = parser.parse_args(argv)
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
