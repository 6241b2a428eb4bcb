"""The environment deploy/docker-compose.yml gives each service, moved onto one host.

The loopback TLS test (services as processes) and the container smoke test (services in
containers on the host network) both start the services with exactly what the compose file sets,
rewriting only what must differ on one host: listen and backend addresses (127.0.0.1 and free
ports), and for processes the paths of the secrets and the state directory. A variable renamed
in the code but not in the compose file therefore breaks these tests.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping
from pathlib import Path

from tests.deploy.manifests import compose_environment, load_compose

SERVICES = ("vault", "router", "gateway")
# Where compose mounts the secrets and the vault's volume inside the containers.
SECRETS_MOUNT = "/run/secrets/"
STATE_MOUNT = "/var/lib/aicreds"
_INTERPOLATION = re.compile(r"\$\{([A-Z0-9_]+)(?::?-([^}]*))?\}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def interpolate(value: str, environ: Mapping[str, str]) -> str:
    """Compose's `${NAME:-default}` as docker compose resolves it."""
    return _INTERPOLATION.sub(lambda m: environ.get(m.group(1)) or (m.group(2) or ""), value)


def secret_files() -> dict[str, str]:
    """Compose secret name -> the file make_secrets.py writes for it (`./secrets/<file>`)."""
    secrets = load_compose()["secrets"]
    return {name: Path(spec["file"]).name for name, spec in secrets.items()}


def service_secrets(service: str) -> list[str]:
    names: list[str] = load_compose()["services"][service].get("secrets", [])
    return names


def healthcheck(service: str) -> list[str]:
    """The compose healthcheck command (without its leading "CMD")."""
    test: list[str] = load_compose()["services"][service]["healthcheck"]["test"]
    assert test[0] == "CMD"
    return list(test[1:])


def stop_grace_period(service: str) -> float:
    """Compose's stop_grace_period in seconds (10 s when unset, as docker compose has it)."""
    value = str(load_compose()["services"][service].get("stop_grace_period", "10s"))
    return float(value.removesuffix("s"))


def host_ports() -> dict[str, int]:
    return {service: free_port() for service in SERVICES}


def on_host(
    service: str,
    ports: Mapping[str, int],
    *,
    secrets_dir: Path | None = None,
    state_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The compose environment of `service` with addresses on 127.0.0.1:`ports[...]`.

    With `secrets_dir`, `/run/secrets/<name>` becomes the file make_secrets.py wrote there;
    with `state_dir`, the vault's volume path becomes it (both for services run as processes).
    """
    env = {
        k: interpolate(v, environ or {})
        for k, v in compose_environment(load_compose()["services"][service]).items()
    }
    files = secret_files()
    for key, value in list(env.items()):
        if key.endswith("_METRICS_LISTEN"):
            env[key] = "127.0.0.1:0"  # a metrics endpoint on a free port of this host
        elif key.endswith("_LISTEN"):
            owner = key.removesuffix("_LISTEN").lower()
            env[key] = f"127.0.0.1:{ports[owner]}"
        elif key.endswith("_ADDR"):
            # ROUTER_VAULT_ADDR: vault:50051 -> the vault's port on 127.0.0.1
            target = value.rpartition(":")[0]
            env[key] = f"127.0.0.1:{ports[target]}"
        elif secrets_dir is not None and value.startswith(SECRETS_MOUNT):
            env[key] = str(secrets_dir / files[value.removeprefix(SECRETS_MOUNT)])
        elif state_dir is not None and value.startswith(STATE_MOUNT):
            env[key] = str(state_dir) + value.removeprefix(STATE_MOUNT)
    if service == "gateway" and "GATEWAY_ORIGIN" in env:
        env["GATEWAY_ORIGIN"] = f"http://127.0.0.1:{ports['gateway']}"
    return env


def host_healthcheck(service: str, ports: Mapping[str, int], secrets_dir: Path) -> list[str]:
    """The compose healthcheck's arguments after the module, for a process on this host."""
    files = secret_files()
    args = healthcheck(service)[3:]
    out = []
    for arg in args:
        if arg.startswith(SECRETS_MOUNT):
            arg = str(secrets_dir / files[arg.removeprefix(SECRETS_MOUNT)])
        out.append(arg)
    if out[0].startswith("http"):
        out[0] = f"http://127.0.0.1:{ports[service]}/readyz"
    else:
        out[0] = f"127.0.0.1:{ports[service]}"
    return out
