"""Several gateways and routers (issue 17): Redis and replicas in the PostgreSQL deployments.

deploy/k8s-overlays/postgres adds a hardened one-replica Redis that only the gateway pods may
reach, and gives the gateways GATEWAY_REDIS_URL from the Secret aicreds-redis (a strategic-merge
patch, which the Python renderer applies as kustomize does); router and gateway keep the base's
autoscalers of at least two replicas. deploy/compose.postgres.yml adds the same Redis, the
gateway's URL with the interpolated password, and two router replicas (one gateway: compose
publishes one host port). make_secrets.py writes the password for both.
"""

from __future__ import annotations

import base64
import copy
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from services.gateway.redis_url import parse_redis_url
from tests.deploy.manifests import (
    COMPOSE_FILE,
    COMPOSE_POSTGRES_FILE,
    DEPLOY,
    K8S,
    POSTGRES_OVERLAY,
    compose_environment,
    containers,
    kubectl_kustomize,
    load_compose,
    load_compose_override,
    load_yaml_documents,
    pod_spec,
    render_kustomization,
)
from tests.deploy.service_env import variables_read
from tests.deploy.test_manifests import K8S_VERSION, _compose_cli

Obj = dict[str, Any]
REDIS_LABELS = {"app.kubernetes.io/name": "aicreds", "app.kubernetes.io/component": "redis"}
GATEWAY_LABELS = {"app.kubernetes.io/name": "aicreds", "app.kubernetes.io/component": "gateway"}
REDIS_URL_REF = {"secretKeyRef": {"name": "aicreds-redis", "key": "url"}}
PASSWORD_REF = "${AICREDS_REDIS_PASSWORD:?"


def _by_kind(objects: list[Obj], kind: str) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def _key(obj: Obj) -> tuple[str, str]:
    return (obj["kind"], obj["metadata"]["name"])


@pytest.fixture(scope="module")
def base() -> list[Obj]:
    return render_kustomization(K8S)


@pytest.fixture(scope="module")
def overlay() -> list[Obj]:
    return render_kustomization(POSTGRES_OVERLAY)


# --- Kubernetes -------------------------------------------------------------------------------


def test_redis_objects_are_valid_and_match_kubectl_kustomize(overlay: list[Obj]) -> None:
    redis = [o for o in overlay if "redis" in o["metadata"]["name"]]
    assert {_key(o) for o in redis} == {
        ("Deployment", "aicreds-redis"),
        ("Service", "aicreds-redis"),
        ("NetworkPolicy", "aicreds-redis"),
        ("NetworkPolicy", "aicreds-gateway-redis"),
    }
    for obj in overlay:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    rendered = kubectl_kustomize(POSTGRES_OVERLAY)
    if rendered is None:
        pytest.skip("kubectl with kustomize is not installed; the Python renderer stands alone")
    # The gateway's patched env in the same order as kustomize's, not merely the same set.
    assert sorted(rendered, key=_key) == sorted(overlay, key=_key)


def test_redis_deployment_is_hardened_and_keeps_nothing(overlay: list[Obj]) -> None:
    redis = _by_kind(overlay, "Deployment")["aicreds-redis"]
    assert redis["spec"]["replicas"] == 1
    assert redis["spec"]["selector"]["matchLabels"] == REDIS_LABELS
    assert REDIS_LABELS.items() <= redis["spec"]["template"]["metadata"]["labels"].items()
    pod = pod_spec(redis)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 999  # the image's redis user
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    (main,) = containers(redis)
    assert main["image"] == "redis:7"
    security = main["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    for bound in ("requests", "limits"):
        assert set(main["resources"][bound]) == {"cpu", "memory"}
    assert "exec" in main["readinessProbe"] and "redis-cli ping" in str(main["readinessProbe"])
    assert main["livenessProbe"]["tcpSocket"]["port"] == "redis"
    assert main["ports"] == [{"name": "redis", "containerPort": 6379, "protocol": "TCP"}]
    # No persistence: no snapshots, no append-only file, and /data is a scratch emptyDir.
    args = main["args"]
    assert args[args.index("--save") + 1] == ""
    assert args[args.index("--appendonly") + 1] == "no"
    assert pod["volumes"] == [{"name": "data", "emptyDir": {"sizeLimit": "16Mi"}}]
    assert main["volumeMounts"] == [{"name": "data", "mountPath": "/data"}]
    # Memory capped below the container's limit, so Redis evicts rather than being killed.
    maxmemory = args[args.index("--maxmemory") + 1]
    assert maxmemory.endswith("mb") and int(maxmemory[:-2]) < 256
    assert main["resources"]["limits"]["memory"] == "256Mi"
    # The password from the Secret, expanded by the kubelet; never in the manifest.
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    env = {e["name"]: e for e in main["env"]}
    assert set(env) == {"REDIS_PASSWORD", "REDISCLI_AUTH"}
    for entry in env.values():
        assert entry["valueFrom"] == {"secretKeyRef": {"name": "aicreds-redis", "key": "password"}}
        assert "value" not in entry


def test_redis_service_selects_the_redis_pod_on_6379(overlay: list[Obj]) -> None:
    service = _by_kind(overlay, "Service")["aicreds-redis"]["spec"]
    assert service["type"] == "ClusterIP" and "clusterIP" not in service  # one replica
    assert service["selector"] == REDIS_LABELS
    (port,) = service["ports"]
    assert (port["port"], port["targetPort"]) == (6379, "redis")


def test_gateway_gets_the_redis_url_from_the_secret_and_nothing_else_changes(
    base: list[Obj], overlay: list[Obj]
) -> None:
    gateway = copy.deepcopy(_by_kind(overlay, "Deployment")["aicreds-gateway"])
    (main,) = [c for c in pod_spec(gateway)["containers"] if c["name"] == "gateway"]
    (url,) = [e for e in main["env"] if e["name"] == "GATEWAY_REDIS_URL"]
    assert url == {"name": "GATEWAY_REDIS_URL", "valueFrom": REDIS_URL_REF}
    main["env"].remove(url)
    assert gateway == _by_kind(base, "Deployment")["aicreds-gateway"]
    # The router and the vault get no Redis.
    for name in ("aicreds-router", "aicreds-vault"):
        for container in containers(_by_kind(overlay, "Deployment")[name]):
            assert not [e for e in container.get("env", []) if "REDIS" in e["name"]], name
    assert "GATEWAY_REDIS_URL" in variables_read("gateway")


def test_redis_secret_template_holds_only_placeholders(overlay: list[Obj]) -> None:
    (secret,) = load_yaml_documents(POSTGRES_OVERLAY / "redis.template.yaml")
    kubernetes_validate.validate(secret, K8S_VERSION, strict=True)
    assert secret["metadata"]["name"] == "aicreds-redis"
    assert set(secret["stringData"]) == {"password", "url"}
    assert "data" not in secret
    for value in secret["stringData"].values():
        assert value.startswith("REPLACE_ME"), value
    # Not rendered: applying it would replace the real password with the placeholder.
    assert not [o for o in overlay if o["kind"] == "Secret"]
    kustomization = (POSTGRES_OVERLAY / "kustomization.yaml").read_text()
    assert "redis.template.yaml" not in kustomization.split("apiVersion:", 1)[1]


def _selects(policy: Obj, labels: dict[str, str]) -> bool:
    selector = policy["spec"]["podSelector"].get("matchLabels", {})
    selected: bool = selector.items() <= labels.items()
    return selected


def test_only_the_gateway_reaches_redis(base: list[Obj], overlay: list[Obj]) -> None:
    policies = _by_kind(overlay, "NetworkPolicy")
    # The base's policies are untouched, the default deny among them.
    for name, policy in _by_kind(base, "NetworkPolicy").items():
        assert policies[name] == policy, name
    redis = policies["aicreds-redis"]["spec"]
    assert redis["podSelector"]["matchLabels"] == REDIS_LABELS
    assert redis["policyTypes"] == ["Ingress", "Egress"]
    assert redis["egress"] == []
    (rule,) = redis["ingress"]
    assert rule == {
        "from": [{"podSelector": {"matchLabels": GATEWAY_LABELS}}],
        "ports": [{"protocol": "TCP", "port": 6379}],
    }
    # No other policy lets anything into the Redis pods (ingress rules add up).
    for name, policy in policies.items():
        if name != "aicreds-redis" and _selects(policy, REDIS_LABELS):
            assert not policy["spec"].get("ingress"), name
    # Egress to Redis: the gateway's, on 6379, and nobody else's.
    egress_to_redis = {
        name: [p["port"] for p in rule.get("ports", [])]
        for name, policy in policies.items()
        for rule in policy["spec"].get("egress", [])
        for peer in rule.get("to", [])
        if peer.get("podSelector", {}).get("matchLabels") == REDIS_LABELS
    }
    assert egress_to_redis == {"aicreds-gateway-redis": [6379]}
    gateway_redis = policies["aicreds-gateway-redis"]["spec"]
    assert gateway_redis["podSelector"]["matchLabels"] == GATEWAY_LABELS
    assert gateway_redis["policyTypes"] == ["Egress"]


def test_router_and_gateway_run_at_least_two_replicas(base: list[Obj], overlay: list[Obj]) -> None:
    # The base's autoscalers already keep two of each; the overlay leaves them as they are.
    hpas = _by_kind(overlay, "HorizontalPodAutoscaler")
    pdbs = _by_kind(overlay, "PodDisruptionBudget")
    deployments = _by_kind(overlay, "Deployment")
    for name in ("aicreds-router", "aicreds-gateway"):
        assert hpas[name] == _by_kind(base, "HorizontalPodAutoscaler")[name]
        assert hpas[name]["spec"]["minReplicas"] >= 2
        assert hpas[name]["spec"]["maxReplicas"] > hpas[name]["spec"]["minReplicas"]
        assert deployments[name]["spec"]["replicas"] >= 2
        assert pdbs[name]["spec"]["minAvailable"] < hpas[name]["spec"]["minReplicas"]
    assert "aicreds-redis" not in hpas and "aicreds-redis" not in pdbs  # one replica


def test_the_base_has_no_redis(base: list[Obj]) -> None:
    render_kustomization(POSTGRES_OVERLAY)
    assert render_kustomization(K8S) == base
    assert not [o for o in base if "redis" in o["metadata"]["name"]]
    for obj in base:
        for container in containers(obj) if "spec" in obj else []:
            assert not [e for e in container.get("env", []) if "REDIS" in e["name"]]


def test_merge_patch_renders_as_kustomize_does(tmp_path: Path) -> None:
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "kustomization.yaml").write_text("resources: [d.yaml]\n")
    (tmp_path / "base" / "d.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "d", "labels": {"a": "1"}},
                "spec": {
                    "replicas": 1,
                    "template": {
                        "spec": {
                            "containers": [
                                {
                                    "name": "c",
                                    "image": "x:1",
                                    "env": [
                                        {"name": "A", "value": "1"},
                                        {"name": "B", "value": "2"},
                                    ],
                                },
                                {"name": "other", "image": "y:1"},
                            ]
                        }
                    },
                },
            }
        )
    )
    (tmp_path / "patch.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "d"},
                "spec": {
                    "replicas": 2,
                    "template": {
                        "spec": {
                            "containers": [
                                {
                                    "name": "c",
                                    "env": [
                                        {"name": "C", "valueFrom": REDIS_URL_REF},
                                        {"name": "A", "value": "one"},
                                    ],
                                }
                            ]
                        }
                    },
                },
            }
        )
    )
    (tmp_path / "kustomization.yaml").write_text(
        "resources: [base]\npatches: [{path: patch.yaml}]\n"
    )
    (rendered,) = render_kustomization(tmp_path)
    assert rendered["metadata"] == {"name": "d", "labels": {"a": "1"}}
    assert rendered["spec"]["replicas"] == 2
    main, other = rendered["spec"]["template"]["spec"]["containers"]
    assert other == {"name": "other", "image": "y:1"}
    assert main["image"] == "x:1"
    # kustomize's order: the patch's elements first, then the ones it does not name.
    assert main["env"] == [
        {"name": "C", "valueFrom": REDIS_URL_REF},
        {"name": "A", "value": "one"},
        {"name": "B", "value": "2"},
    ]
    reference = kubectl_kustomize(tmp_path)
    if reference is not None:
        assert reference == [rendered]


# --- docker-compose ---------------------------------------------------------------------------


def _services() -> dict[str, Obj]:
    services: dict[str, Obj] = load_compose_override()["services"]
    return services


def test_compose_redis_is_hardened_unpublished_and_keeps_nothing() -> None:
    redis = _services()["redis"]
    assert redis["image"] == "redis:7"
    assert redis["user"] == "redis"
    assert redis["read_only"] is True
    assert redis["cap_drop"] == ["ALL"]
    assert redis["security_opt"] == ["no-new-privileges:true"]
    assert redis["networks"] == ["internal"], "the internal network only: no route out"
    assert "ports" not in redis and "expose" not in redis
    assert "volumes" not in redis and redis["tmpfs"] == ["/data"]
    command = redis["command"]
    assert command[0] == "redis-server"
    assert command[command.index("--save") + 1] == ""
    assert command[command.index("--appendonly") + 1] == "no"
    assert command[command.index("--requirepass") + 1].startswith(PASSWORD_REF)
    # The health check authenticates through REDISCLI_AUTH and needs PONG (redis-cli exits 0 on
    # an error reply such as NOAUTH).
    assert compose_environment(redis)["REDISCLI_AUTH"].startswith(PASSWORD_REF)
    test = redis["healthcheck"]["test"]
    assert test == ["CMD-SHELL", "redis-cli ping | grep -qx PONG"]
    assert load_compose()["networks"]["internal"]["internal"] is True


def test_compose_gateway_uses_redis_and_the_router_runs_two_replicas() -> None:
    services = _services()
    gateway = services["gateway"]
    url = compose_environment(gateway)["GATEWAY_REDIS_URL"]
    assert url.startswith("redis://:" + PASSWORD_REF)
    assert url.endswith("}@redis:6379/0")
    assert gateway["depends_on"] == {"redis": {"condition": "service_healthy"}}
    # One gateway: the base publishes one host port, which two replicas could not both bind.
    assert "deploy" not in gateway and "ports" not in gateway
    assert len(load_compose()["services"]["gateway"]["ports"]) == 1
    assert services["router"] == {"deploy": {"replicas": 2}}
    assert services["vault"]["deploy"]["replicas"] == 2
    merged = compose_environment(load_compose()["services"]["gateway"]) | compose_environment(
        gateway
    )
    assert not set(merged) - variables_read("gateway")


def _compose_config(env_file: Path) -> subprocess.CompletedProcess[str]:
    cli = _compose_cli()
    if cli is None:
        pytest.skip("neither `docker compose` nor docker-compose is installed")
    files = ["-f", str(COMPOSE_FILE), "-f", str(COMPOSE_POSTGRES_FILE)]
    return subprocess.run(
        [*cli, "--env-file", str(env_file), *files, "config"],
        capture_output=True,
        text=True,
        cwd=DEPLOY,
        check=False,
    )


def test_compose_config_interpolates_the_redis_password(tmp_path: Path) -> None:
    redis_password = "ab" * 32
    env_file = tmp_path / "postgres.env"
    env_file.write_text(
        f"AICREDS_POSTGRES_PASSWORD={'cd' * 32}\nAICREDS_REDIS_PASSWORD={redis_password}\n"
    )
    result = _compose_config(env_file)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    url = services["gateway"]["environment"]["GATEWAY_REDIS_URL"]
    assert url == f"redis://:{redis_password}@redis:6379/0"
    assert str(parse_redis_url(url)) == "redis://:***@redis:6379/0"
    command = services["redis"]["command"]
    assert command[command.index("--requirepass") + 1] == redis_password
    assert services["redis"]["environment"]["REDISCLI_AUTH"] == redis_password
    assert set(services["gateway"]["depends_on"]) == {"vault", "router", "redis"}
    assert services["router"]["deploy"]["replicas"] == 2
    assert "ports" not in services["redis"]
    # One published port in all, the gateway's (the form differs between compose versions).
    published = {name: s["ports"] for name, s in services.items() if "ports" in s}
    assert list(published) == ["gateway"] and len(published["gateway"]) == 1


def test_compose_config_refuses_to_run_redis_without_its_password(tmp_path: Path) -> None:
    # A postgres.env from before Redis (the database password only) is refused, naming it.
    old = tmp_path / "old.env"
    old.write_text(f"AICREDS_POSTGRES_PASSWORD={'cd' * 32}\n")
    result = _compose_config(old)
    assert result.returncode != 0
    assert "AICREDS_REDIS_PASSWORD" in result.stderr  # v1 quotes the entry, v2 the variable
    missing = _compose_config(tmp_path / "missing.env")
    assert missing.returncode != 0


def test_make_secrets_writes_the_redis_password_for_compose_and_kubernetes(
    tmp_path: Path,
) -> None:
    out = tmp_path / "secrets"
    make_secrets = [sys.executable, str(DEPLOY / "make_secrets.py"), str(out)]
    subprocess.run(make_secrets, check=True, capture_output=True)
    env_file = out / "postgres.env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    values = dict(line.partition("=")[::2] for line in env_file.read_text().splitlines())
    assert set(values) == {"AICREDS_POSTGRES_PASSWORD", "AICREDS_REDIS_PASSWORD"}
    password = values["AICREDS_REDIS_PASSWORD"]
    assert re.fullmatch(r"[0-9a-f]{64}", password)
    assert password != values["AICREDS_POSTGRES_PASSWORD"]
    assert PASSWORD_REF in COMPOSE_POSTGRES_FILE.read_text()
    # The overlay's Secret, with the same password, in k8s-secrets.yaml.
    generated = _by_kind(load_yaml_documents(out / "k8s-secrets.yaml"), "Secret")
    secret = generated["aicreds-redis"]
    kubernetes_validate.validate(secret, K8S_VERSION, strict=True)
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data == {"password": password, "url": f"redis://:{password}@aicreds-redis:6379/0"}
    assert parse_redis_url(data["url"]) is not None
    # --renew-tls keeps it (Redis has no data to lose, but the running pods know the old one).
    before = env_file.read_text()
    subprocess.run([*make_secrets, "--renew-tls"], check=True, capture_output=True)
    assert env_file.read_text() == before
    renewed = _by_kind(load_yaml_documents(out / "k8s-secrets.yaml"), "Secret")
    assert renewed["aicreds-redis"] == secret
    # A second run refuses to replace anything, passwords included.
    assert subprocess.run(make_secrets, capture_output=True).returncode == 1
    assert env_file.read_text() == before
