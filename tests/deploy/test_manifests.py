"""deploy/ validated offline: Kubernetes manifests, the compose file, the Dockerfile, secrets."""

from __future__ import annotations

import json
import re
import shutil
import stat
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from services.common.callers import CallerRegistry, Right
from services.common.grpc_server import channel_target
from tests.deploy.manifests import (
    COMPOSE_FILE,
    DEPLOY,
    K8S,
    ROOT,
    compose_environment,
    containers,
    kubectl_kustomize,
    load_compose,
    load_yaml_documents,
    pod_spec,
    render_kustomization,
)

K8S_VERSION = "1.37.0"
PORTS = {"vault": 50051, "router": 50052, "gateway": 8080}
METRICS_PORT = 9464
METRICS_COMPONENTS = ("vault", "router")
COMMANDS = {"vault": "aicreds-vault", "router": "aicreds-router", "gateway": "aicreds-gateway"}


def _by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def _component(obj: dict[str, Any]) -> str:
    component: str = obj["metadata"]["labels"]["app.kubernetes.io/component"]
    return component


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    return render_kustomization()


# --- Kubernetes -------------------------------------------------------------------------------


def test_every_manifest_is_valid_for_kubernetes(objects: list[dict[str, Any]]) -> None:
    assert len(objects) >= 15
    for obj in objects:
        # strict: unknown fields (a typo such as `readinesProbe`) fail too.
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_secret_templates_are_valid_and_hold_only_placeholders() -> None:
    secrets = load_yaml_documents(K8S / "secrets.template.yaml")
    assert {s["metadata"]["name"] for s in secrets} == {
        "aicreds-vault",
        "aicreds-router",
        "aicreds-gateway",
        "aicreds-vault-tls",
        "aicreds-router-tls",
        "aicreds-gateway-tls",
    }
    for secret in secrets:
        kubernetes_validate.validate(secret, K8S_VERSION, strict=True)
        assert "data" not in secret
        for value in secret["stringData"].values():
            assert value.startswith("REPLACE_ME"), value


def test_python_render_matches_kubectl_kustomize(objects: list[dict[str, Any]]) -> None:
    rendered = kubectl_kustomize()
    if rendered is None:
        pytest.skip("kubectl with kustomize is not installed; the Python renderer stands alone")

    def key(o: dict[str, Any]) -> tuple[str, str]:
        return (o["kind"], o["metadata"]["name"])

    assert sorted(rendered, key=key) == sorted(objects, key=key)


def test_workloads_are_hardened_and_sized(objects: list[dict[str, Any]]) -> None:
    workloads = [o for o in objects if o["kind"] in {"Deployment", "StatefulSet"}]
    assert {(o["kind"], _component(o)) for o in workloads} == {
        ("StatefulSet", "vault"),
        ("Deployment", "router"),
        ("Deployment", "gateway"),
    }
    for workload in workloads:
        pod = pod_spec(workload)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["automountServiceAccountToken"] is False
        for container in containers(workload):
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"]
            for bound in ("requests", "limits"):
                assert set(container["resources"][bound]) == {"cpu", "memory"}
            assert container["image"] == "aicreds:0.1.0"


def test_probes_speak_mutual_tls_to_vault_and_router_and_http_to_gateway(
    objects: list[dict[str, Any]],
) -> None:
    for workload in (o for o in objects if o["kind"] in {"Deployment", "StatefulSet"}):
        component = _component(workload)
        main = next(c for c in pod_spec(workload)["containers"] if c["name"] == component)
        assert main["command"] == [COMMANDS[component]]
        # The vault and the router export their metrics on a port of their own.
        metrics = [METRICS_PORT] if component in METRICS_COMPONENTS else []
        assert [p["containerPort"] for p in main["ports"]] == [PORTS[component], *metrics]
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            if component == "gateway":
                assert main[probe]["httpGet"]["path"] in {"/healthz", "/readyz"}
            elif probe == "livenessProbe":
                assert main[probe]["tcpSocket"] == {"port": PORTS[component]}
            else:
                # kubelet's native gRPC probe speaks plaintext only, which the port refuses.
                assert "grpc" not in main[probe]
                command = main[probe]["exec"]["command"]
                assert command[:4] == ["python", "-m", "services.healthcheck"] + [
                    f"127.0.0.1:{PORTS[component]}"
                ]
                assert {"--tls-ca", "--tls-cert", "--tls-key"} <= set(command)
        if component == "gateway":
            assert main["readinessProbe"]["httpGet"]["path"] == "/readyz"
        listen = {e["name"]: e["value"] for e in main["env"]}[f"{component.upper()}_LISTEN"]
        assert listen == f"0.0.0.0:{PORTS[component]}"


def test_vault_is_one_statefulset_replica_with_a_volume_claim(
    objects: list[dict[str, Any]],
) -> None:
    vault = _by_kind(objects, "StatefulSet")["aicreds-vault"]
    assert vault["spec"]["replicas"] == 1
    assert vault["spec"]["serviceName"] in _by_kind(objects, "Service")
    (claim,) = vault["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in pod_spec(vault)["containers"][0]["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == "/var/lib/aicreds"
    env = {e["name"]: e["value"] for e in pod_spec(vault)["containers"][0]["env"]}
    assert env["VAULT_DATABASE"].startswith("/var/lib/aicreds/")
    assert env.get("VAULT_GENERATE_DEV_KEY", "false") == "false"


def test_router_and_gateway_scale_with_hpa_and_pdb(objects: list[dict[str, Any]]) -> None:
    deployments = _by_kind(objects, "Deployment")
    hpas = _by_kind(objects, "HorizontalPodAutoscaler")
    pdbs = _by_kind(objects, "PodDisruptionBudget")
    for name in ("aicreds-router", "aicreds-gateway"):
        assert hpas[name]["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": name,
        }
        assert hpas[name]["spec"]["minReplicas"] >= 2
        selector = deployments[name]["spec"]["selector"]["matchLabels"]
        assert pdbs[name]["spec"]["selector"]["matchLabels"] == selector
        assert pdbs[name]["spec"]["minAvailable"] < hpas[name]["spec"]["minReplicas"]


def test_services_select_their_pods_on_the_right_ports(objects: list[dict[str, Any]]) -> None:
    services = _by_kind(objects, "Service")
    for component, port in PORTS.items():
        service = services[f"aicreds-{component}"]
        assert service["spec"]["type"] == "ClusterIP"
        assert service["spec"]["selector"]["app.kubernetes.io/component"] == component
        assert [p["port"] for p in service["spec"]["ports"]] == [port]


def test_router_and_vault_services_are_headless_and_the_clients_use_them(
    objects: list[dict[str, Any]],
) -> None:
    # Headless: DNS answers every ready pod, and the clients' channels balance calls over them
    # (round robin); a ClusterIP would pin each client to one pod per connection.
    services = _by_kind(objects, "Service")
    assert services["aicreds-router"]["spec"]["clusterIP"] == "None"
    assert services["aicreds-vault"]["spec"]["clusterIP"] == "None"
    assert "clusterIP" not in services["aicreds-gateway"]["spec"]  # reached over HTTP, via Ingress
    addresses: dict[tuple[str, str], str] = {}
    for name, workload in _by_kind(objects, "Deployment").items():
        for container in containers(workload):
            for env in container.get("env", []):
                if env["name"].endswith("_ADDR"):
                    addresses[name, env["name"]] = env["value"]
    assert addresses == {
        ("aicreds-gateway", "GATEWAY_VAULT_ADDR"): "aicreds-vault:50051",
        ("aicreds-gateway", "GATEWAY_ROUTER_ADDR"): "aicreds-router:50052",
        ("aicreds-router", "ROUTER_VAULT_ADDR"): "aicreds-vault:50051",
    }
    # A bare host:port is resolved through DNS, every address of it (grpc_server.channel_target).
    assert channel_target("aicreds-router:50052") == "dns:///aicreds-router:50052"


def test_secrets_are_mounted_from_the_secrets_make_secrets_creates(
    objects: list[dict[str, Any]], tmp_path: Path
) -> None:
    subprocess.run(
        [sys.executable, str(DEPLOY / "make_secrets.py"), str(tmp_path / "s")],
        check=True,
        capture_output=True,
    )
    generated = {
        s["metadata"]["name"]: s for s in load_yaml_documents(tmp_path / "s" / "k8s-secrets.yaml")
    }
    for workload in (o for o in objects if o["kind"] in {"Deployment", "StatefulSet"}):
        pod = pod_spec(workload)
        (secret_volume,) = [v for v in pod["volumes"] if v["name"] == "secret"]
        secret = generated[secret_volume["secret"]["secretName"]]
        (tls_volume,) = [v for v in pod["volumes"] if v["name"] == "tls"]
        tls = generated[tls_volume["secret"]["secretName"]]
        assert tls["type"] == "kubernetes.io/tls"
        assert set(tls["data"]) == {"tls.crt", "tls.key", "ca.crt"}
        # The init container copies every key of the Secret to an owner-only file.
        (init,) = pod["initContainers"]
        copied = {Path(a).name for a in init["command"] if a.startswith("/etc/aicreds/secret/")}
        assert copied == set(secret["data"])
        # Every file path the service is given is one of those copies.
        env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
        for name, value in env.items():
            if name.endswith(("_FILE",)):
                assert value.startswith("/run/aicreds/") and Path(value).name in copied, name
            if "_TLS_" in name:
                assert value.startswith("/etc/aicreds/tls/") and Path(value).name in tls["data"]


def _policies(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return _by_kind(objects, "NetworkPolicy")


def _selected(policy: dict[str, Any]) -> str | None:
    labels = policy["spec"]["podSelector"].get("matchLabels", {})
    component: str | None = labels.get("app.kubernetes.io/component")
    return component


def _ports(rule: dict[str, Any]) -> set[int]:
    return {p["port"] for p in rule["ports"]}


def test_vault_and_router_pods_are_annotated_for_scraping_their_metrics_port(
    objects: list[dict[str, Any]],
) -> None:
    for workload in objects:
        if workload["kind"] not in {"Deployment", "StatefulSet"}:
            continue
        component = _component(workload)
        if component not in METRICS_COMPONENTS:
            continue
        annotations = workload["spec"]["template"]["metadata"]["annotations"]
        assert annotations == {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(METRICS_PORT),
            "prometheus.io/path": "/metrics",
        }
        main = next(c for c in pod_spec(workload)["containers"] if c["name"] == component)
        env = {e["name"]: e.get("value") for e in main["env"]}
        assert env[f"{component.upper()}_METRICS_LISTEN"] == f"0.0.0.0:{METRICS_PORT}"


def test_network_policies_deny_by_default_and_wall_off_the_vault(
    objects: list[dict[str, Any]],
) -> None:
    policies = _policies(objects)
    deny = policies["aicreds-default-deny"]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    by_component = {name: p["spec"] for p in policies.values() if (name := _selected(p))}
    vault = by_component["vault"]
    sources = {
        peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        for rule in vault["ingress"]
        if _ports(rule) == {PORTS["vault"]}
        for peer in rule["from"]
    }
    assert sources == {"router", "gateway"}
    # Every other rule lets only the labelled scraper reach the metrics port.
    for component in METRICS_COMPONENTS:
        for rule in by_component[component]["ingress"]:
            if _ports(rule) != {PORTS[component]}:
                assert _ports(rule) == {METRICS_PORT}
                (peer,) = rule["from"]
                labels = peer["podSelector"]["matchLabels"]
                assert labels == {"aicreds.io/metrics-scraper": "true"}
    assert vault["egress"] == []
    # Only the router may leave the cluster: an ipBlock appears in no other egress rule.
    for component, spec in by_component.items():
        blocks = [
            peer["ipBlock"]
            for rule in spec.get("egress", [])
            for peer in rule.get("to", [])
            if "ipBlock" in peer
        ]
        if component == "router":
            assert any(b["cidr"] == "0.0.0.0/0" and "169.254.0.0/16" in b["except"] for b in blocks)
        else:
            assert blocks == [], component
    # DNS for every pod, and nothing else for "everyone".
    dns = policies["aicreds-allow-dns"]["spec"]
    assert dns["podSelector"] == {}
    assert {p["port"] for rule in dns["egress"] for p in rule["ports"]} == {53}


# --- docker-compose ---------------------------------------------------------------------------


def _compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_compose_file_passes_docker_compose_config() -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip("neither `docker compose` nor docker-compose is installed")
    result = subprocess.run(
        [*cli, "-f", str(COMPOSE_FILE), "config", "-q"],
        capture_output=True,
        text=True,
        cwd=DEPLOY,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_compose_services_images_healthchecks_and_ports() -> None:
    compose = load_compose()
    assert set(compose) <= {"services", "secrets", "volumes", "networks", "name"}
    services = compose["services"]
    assert set(services) == {"vault", "router", "gateway"}
    for name, service in services.items():
        assert service["command"] == [COMMANDS[name]]
        assert service["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
        assert service["read_only"] is True
        assert service["user"] == "10001:10001"
        assert service["cap_drop"] == ["ALL"]
        test = service["healthcheck"]["test"]
        assert test[:4] == ["CMD", "python", "-m", "services.healthcheck"]
        target = test[4]
        if name == "gateway":
            assert target == f"http://127.0.0.1:{PORTS[name]}/readyz"
        else:
            assert target == f"127.0.0.1:{PORTS[name]}"
        env = compose_environment(service)
        assert env[f"{name.upper()}_LISTEN"] == f"0.0.0.0:{PORTS[name]}"
        for secret in service.get("secrets", []):
            assert secret in compose["secrets"]
        for key, value in env.items():
            if key.endswith("_FILE") and value.startswith("/run/secrets/"):
                assert value.removeprefix("/run/secrets/") in service["secrets"], key
        assert ("ports" in service) == (name == "gateway"), f"only the gateway is published: {name}"
    assert services["vault"]["volumes"] == ["vault-data:/var/lib/aicreds"]
    assert "vault-data" in compose["volumes"]
    assert compose["networks"]["internal"]["internal"] is True
    assert "egress" in services["router"]["networks"]
    assert "egress" not in services["vault"]["networks"]
    assert services["router"]["depends_on"]["vault"]["condition"] == "service_healthy"
    for secret in compose["secrets"].values():
        assert secret["file"].startswith("./secrets/")


def test_make_secrets_writes_private_files_the_services_accept(tmp_path: Path) -> None:
    out = tmp_path / "secrets"
    subprocess.run([sys.executable, str(DEPLOY / "make_secrets.py"), str(out)], check=True)
    compose_files = {Path(s["file"]).name for s in load_compose()["secrets"].values()}
    assert compose_files <= {p.name for p in out.iterdir()}
    for path in out.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    vault = CallerRegistry.load(out / "vault-callers.json")
    router = CallerRegistry.load(out / "router-callers.json")

    def token(name: str) -> str:
        return (out / name).read_text().strip()

    gateway_at_vault = vault.authenticate(token("gateway-vault.token"))
    router_at_vault = vault.authenticate(token("router-vault.token"))
    gateway_at_router = router.authenticate(token("gateway-router.token"))
    assert gateway_at_vault is not None and gateway_at_vault.rights == {Right.MANAGE}
    assert router_at_vault is not None and router_at_vault.rights == {Right.RESOLVE}
    assert gateway_at_router is not None and gateway_at_router.rights == {Right.INVOKE}
    keyring = json.loads((out / "master-keys.json").read_text())
    assert keyring["version"] == 1 and keyring["primary"] in keyring["keys"]
    # A second run must not replace the keyring (the old database would become unreadable).
    again = subprocess.run(
        [sys.executable, str(DEPLOY / "make_secrets.py"), str(out)], capture_output=True
    )
    assert again.returncode == 1
    assert json.loads((out / "master-keys.json").read_text()) == keyring


# --- Dockerfile -------------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_non_root_and_ships_the_entry_points() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+\S+(?:\s+AS\s+(\w+))?", text, flags=re.M)
    assert len(stages) >= 2
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.M)
    assert users and users[-1].split(":")[0] not in {"0", "root"}
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(COMMANDS.values()) | {"aicreds-admin"} <= set(scripts)
    assert "pip install ." in text
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert {"!gen/**", "!services/**", "!pyproject.toml", "!README.md"} <= set(ignore)
