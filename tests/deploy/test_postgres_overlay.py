"""The vault on PostgreSQL: the Kubernetes overlay and the compose override, validated offline.

deploy/k8s-overlays/postgres renders (with the Python subset of kustomize, and `kubectl
kustomize` where present) to the base with the vault as a Deployment of several replicas on a
database URL from a Secret; deploy/compose.postgres.yml adds PostgreSQL and a second vault
replica to the compose file. The base outputs stay as they were. The Redis both add for the
gateways, and the router and gateway replicas, are tests/deploy/test_ha_deploy.py's.
"""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from tests.deploy.manifests import (
    COMPOSE_FILE,
    COMPOSE_POSTGRES_FILE,
    DEPLOY,
    K8S,
    POSTGRES_OVERLAY,
    compose_environment,
    containers,
    k8s_environment,
    kubectl_kustomize,
    load_compose,
    load_compose_override,
    load_yaml_documents,
    pod_spec,
    render_kustomization,
)
from tests.deploy.service_env import variables_read
from tests.deploy.test_manifests import K8S_VERSION, _compose_cli

VAULT_LABELS = {"app.kubernetes.io/name": "aicreds", "app.kubernetes.io/component": "vault"}
Obj = dict[str, Any]


def _key(obj: Obj) -> tuple[str, str]:
    return (obj["kind"], obj["metadata"]["name"])


def _by_kind(objects: list[Obj], kind: str) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def _vault(objects: list[Obj]) -> Obj:
    (vault,) = [
        o
        for o in objects
        if o["kind"] in {"Deployment", "StatefulSet"}
        and o["metadata"]["labels"]["app.kubernetes.io/component"] == "vault"
    ]
    return vault


@pytest.fixture(scope="module")
def base() -> list[Obj]:
    return render_kustomization(K8S)


@pytest.fixture(scope="module")
def overlay() -> list[Obj]:
    return render_kustomization(POSTGRES_OVERLAY)


# --- Kubernetes -------------------------------------------------------------------------------


def test_overlay_is_valid_for_kubernetes(overlay: list[Obj]) -> None:
    for obj in overlay:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_python_render_of_the_overlay_matches_kubectl_kustomize(overlay: list[Obj]) -> None:
    rendered = kubectl_kustomize(POSTGRES_OVERLAY)
    if rendered is None:
        pytest.skip("kubectl with kustomize is not installed; the Python renderer stands alone")
    assert sorted(rendered, key=_key) == sorted(overlay, key=_key)


def test_overlay_changes_only_the_vault_workload_and_adds_pdb_and_policy(
    base: list[Obj], overlay: list[Obj]
) -> None:
    removed = {_key(o) for o in base} - {_key(o) for o in overlay}
    added = {_key(o) for o in overlay} - {_key(o) for o in base}
    assert removed == {("StatefulSet", "aicreds-vault"), ("Service", "aicreds-vault-headless")}
    redis = {
        ("Deployment", "aicreds-redis"),
        ("Service", "aicreds-redis"),
        ("NetworkPolicy", "aicreds-redis"),
        ("NetworkPolicy", "aicreds-gateway-redis"),
    }
    assert added - redis == {
        ("Deployment", "aicreds-vault"),
        ("PodDisruptionBudget", "aicreds-vault"),
        ("NetworkPolicy", "aicreds-vault-database"),
    }
    # Everything the two share is the base's object as it is (router, Services, ...), but for
    # the gateway's GATEWAY_REDIS_URL (test_ha_deploy.py).
    base_by_key = {_key(o): o for o in base}
    for obj in overlay:
        if _key(obj) in base_by_key and _key(obj) != ("Deployment", "aicreds-gateway"):
            assert obj == base_by_key[_key(obj)], _key(obj)
    assert all(o["metadata"].get("namespace", "aicreds") == "aicreds" for o in overlay)


def test_base_output_is_unchanged_by_the_overlay(base: list[Obj]) -> None:
    # Rendering the overlay (which renders the base) must not alter what the base renders.
    render_kustomization(POSTGRES_OVERLAY)
    assert render_kustomization(K8S) == base
    assert ("StatefulSet", "aicreds-vault") in {_key(o) for o in base}
    assert not (K8S / "overlays").exists(), "an overlay inside deploy/k8s is a kustomize cycle"


def test_the_three_vault_replicas_are_reached_through_a_headless_service(
    overlay: list[Obj],
) -> None:
    # DNS answers every ready replica, and the router's and gateway's channels spread their
    # calls over all three (round robin); only the StatefulSet's governing Service is gone.
    services = {o["metadata"]["name"]: o for o in overlay if o["kind"] == "Service"}
    vault = services["aicreds-vault"]["spec"]
    assert vault["clusterIP"] == "None"
    assert vault["selector"]["app.kubernetes.io/component"] == "vault"
    assert "aicreds-vault-headless" not in services


def test_vault_is_a_deployment_of_three_replicas_without_a_volume_claim(
    overlay: list[Obj],
) -> None:
    vault = _vault(overlay)
    assert vault["kind"] == "Deployment"
    assert vault["spec"]["replicas"] == 3
    assert vault["spec"]["selector"]["matchLabels"] == VAULT_LABELS
    assert "volumeClaimTemplates" not in vault["spec"]
    assert not [o for o in overlay if o["kind"] in {"StatefulSet", "PersistentVolumeClaim"}]
    volumes = pod_spec(vault)["volumes"]
    assert not [v for v in volumes if "persistentVolumeClaim" in v]
    # Nothing on disk: only Secrets and in-memory or scratch emptyDirs.
    for volume in volumes:
        assert set(volume) - {"name"} <= {"secret", "emptyDir"}, volume["name"]
    rollout = vault["spec"]["strategy"]["rollingUpdate"]
    assert rollout["maxUnavailable"] == 0


def test_vault_pod_is_the_base_pod_but_for_the_database(
    base: list[Obj], overlay: list[Obj]
) -> None:
    """Same hardening, probes, secrets and resources as the base's StatefulSet pod."""
    expected = copy.deepcopy(pod_spec(_vault(base)))
    actual = copy.deepcopy(pod_spec(_vault(overlay)))
    for pod in (expected, actual):
        (main,) = pod["containers"]
        main["env"] = [e for e in main["env"] if e["name"] != "VAULT_DATABASE"]
        main["volumeMounts"] = [m for m in main["volumeMounts"] if m["name"] != "data"]
    actual.pop("topologySpreadConstraints")
    assert actual == expected
    pod = pod_spec(_vault(overlay))
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    for container in containers(_vault(overlay)):
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["image"] == "aicreds:0.1.0"


def test_vault_database_comes_from_a_secret_key_ref(overlay: list[Obj]) -> None:
    (main,) = pod_spec(_vault(overlay))["containers"]
    (database,) = [e for e in main["env"] if e["name"] == "VAULT_DATABASE"]
    assert "value" not in database
    ref = database["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "aicreds-vault-database", "key": "url"}
    template = load_yaml_documents(POSTGRES_OVERLAY / "database.template.yaml")
    (secret,) = template
    kubernetes_validate.validate(secret, K8S_VERSION, strict=True)
    assert secret["metadata"]["name"] == ref["name"]
    assert list(secret["stringData"]) == [ref["key"]]
    assert "data" not in secret
    assert secret["stringData"]["url"].startswith("REPLACE_ME")
    # Not rendered: applying it would replace the real URL with the placeholder.
    assert not [o for o in overlay if o["kind"] == "Secret"]


def test_a_pod_disruption_budget_keeps_two_vault_replicas(overlay: list[Obj]) -> None:
    vault = _vault(overlay)
    pdb = _by_kind(overlay, "PodDisruptionBudget")["aicreds-vault"]
    assert pdb["spec"]["selector"]["matchLabels"] == vault["spec"]["selector"]["matchLabels"]
    labels = vault["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert 1 <= pdb["spec"]["minAvailable"] < vault["spec"]["replicas"]


def test_network_policy_lets_the_vault_reach_postgres_and_nothing_more(
    base: list[Obj], overlay: list[Obj]
) -> None:
    policies = _by_kind(overlay, "NetworkPolicy")
    # The base's wall stays: deny by default, the vault's own policy unchanged.
    assert policies["aicreds-vault"] == _by_kind(base, "NetworkPolicy")["aicreds-vault"]
    assert (
        policies["aicreds-default-deny"] == _by_kind(base, "NetworkPolicy")["aicreds-default-deny"]
    )
    database = policies["aicreds-vault-database"]["spec"]
    assert database["podSelector"]["matchLabels"] == VAULT_LABELS
    assert database["policyTypes"] == ["Egress"]
    assert "ingress" not in database
    ports = [p for rule in database["egress"] for p in rule["ports"]]
    assert ports == [{"protocol": "TCP", "port": 5432}]
    # Every egress rule that selects the vault pods opens 5432 only (besides DNS for all).
    for name, policy in policies.items():
        selector = policy["spec"]["podSelector"].get("matchLabels", {})
        if selector and selector.items() <= VAULT_LABELS.items():
            for rule in policy["spec"].get("egress", []):
                assert [p["port"] for p in rule["ports"]] == [5432], name


def test_overlay_sets_only_variables_the_services_read(overlay: list[Obj]) -> None:
    envs = k8s_environment(overlay)
    assert "VAULT_DATABASE" in envs["vault"]
    assert "GATEWAY_REDIS_URL" in envs["gateway"]
    for service in ("vault", "router", "gateway"):
        assert not set(envs[service]) - variables_read(service), service


def test_renderer_refuses_patches_it_does_not_implement(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {x: '1'}\n"
    )
    (tmp_path / "merge.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {x: '2'}\n"
    )
    (tmp_path / "delete.yaml").write_text(
        "$patch: delete\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n"
    )
    (tmp_path / "replace.yaml").write_text(
        "$patch: replace\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n"
    )
    (tmp_path / "directive.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {$patch: replace}\n"
    )
    (tmp_path / "null.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {x: null}\n"
    )
    (tmp_path / "list.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\nitems: [1]\n"
    )
    (tmp_path / "labels.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, labels: {x: y}}\n"
    )
    kustomization = tmp_path / "kustomization.yaml"
    for patches, problem in (
        ("[{path: replace.yaml}]", "neither one `$patch: delete`"),
        ("[{path: directive.yaml}]", "directive directive.yaml:data.$patch"),
        ("[{path: null.yaml}]", "deletes null.yaml:data.x"),
        ("[{path: list.yaml}]", "replaces the list list.yaml:items"),
        ("[{path: labels.yaml}]", "by apiVersion, kind and name alone"),
        ("[{path: delete.yaml}]", "matches 0 objects"),
        ("[{path: delete.yaml, target: {kind: ConfigMap}}]", "not just a `path`"),
    ):
        kustomization.write_text(f"resources: [a.yaml]\npatches: {patches}\n")
        with pytest.raises(ValueError, match=re.escape(problem)):
            render_kustomization(tmp_path)


# --- docker-compose ---------------------------------------------------------------------------


def test_compose_override_passes_docker_compose_config(tmp_path: Path) -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip("neither `docker compose` nor docker-compose is installed")
    env_file = tmp_path / "postgres.env"
    env_file.write_text("AICREDS_POSTGRES_PASSWORD=0123abcd\nAICREDS_REDIS_PASSWORD=4567ef\n")
    files = ["-f", str(COMPOSE_FILE), "-f", str(COMPOSE_POSTGRES_FILE)]
    result = subprocess.run(
        [*cli, "--env-file", str(env_file), *files, "config", "-q"],
        capture_output=True,
        text=True,
        cwd=DEPLOY,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    # Without the password compose refuses rather than connect with an empty one.
    missing = subprocess.run(
        [*cli, "--env-file", str(tmp_path / "empty.env"), *files, "config", "-q"],
        capture_output=True,
        text=True,
        cwd=DEPLOY,
        check=False,
    )
    assert missing.returncode != 0


def test_compose_override_runs_postgres_and_two_vault_replicas_on_it() -> None:
    base = load_compose()
    override = load_compose_override()
    assert set(override) <= {"services", "volumes"}
    # postgres and vault here; redis, router and gateway in test_ha_deploy.py.
    assert set(override["services"]) == {"postgres", "vault", "redis", "router", "gateway"}
    postgres = override["services"]["postgres"]
    assert postgres["image"] == "postgres:15"
    assert postgres["networks"] == ["internal"], "no route out, no published port"
    assert "ports" not in postgres
    (data,) = postgres["volumes"]
    assert data == "postgres-data:/var/lib/postgresql/data"
    assert "postgres-data" in override["volumes"]
    test = postgres["healthcheck"]["test"]
    assert test[:2] == ["CMD", "pg_isready"]
    env = compose_environment(postgres)
    password = "${AICREDS_POSTGRES_PASSWORD:?"
    assert env["POSTGRES_PASSWORD"].startswith(password), "no literal password in the file"
    assert (env["POSTGRES_USER"], env["POSTGRES_DB"]) == ("aicreds", "aicreds")
    assert postgres["cap_drop"] == ["ALL"] and postgres["read_only"] is True

    vault = override["services"]["vault"]
    assert vault["deploy"]["replicas"] == 2
    url = compose_environment(vault)["VAULT_DATABASE"]
    assert url.startswith("postgresql://aicreds:" + password)
    assert url.endswith("@postgres:5432/aicreds")
    assert vault["depends_on"]["postgres"]["condition"] == "service_healthy"
    # The replicas keep nothing on their own disk: a tmpfs replaces the base's state volume
    # (compose merges volume entries by their target).
    (scratch,) = vault["volumes"]
    assert scratch == {"type": "tmpfs", "target": "/var/lib/aicreds"}
    assert "vault-data:/var/lib/aicreds" in base["services"]["vault"]["volumes"]
    # Router and gateway reach the replicas by the one service name the certificates carry.
    assert "healthcheck" in base["services"]["vault"]
    assert compose_environment(base["services"]["router"])["ROUTER_VAULT_ADDR"] == "vault:50051"
    assert base["services"]["router"]["depends_on"]["vault"]["condition"] == "service_healthy"
    merged = compose_environment(base["services"]["vault"]) | compose_environment(vault)
    assert not set(merged) - variables_read("vault")


def test_make_secrets_writes_the_password_the_override_interpolates(tmp_path: Path) -> None:
    out = tmp_path / "secrets"
    subprocess.run(
        [sys.executable, str(DEPLOY / "make_secrets.py"), str(out)],
        check=True,
        capture_output=True,
    )
    lines = (out / "postgres.env").read_text().splitlines()
    (line,) = [x for x in lines if x.startswith("AICREDS_POSTGRES_PASSWORD=")]
    name, _, password = line.partition("=")
    assert name == "AICREDS_POSTGRES_PASSWORD"
    assert len(password) == 64 and all(c in "0123456789abcdef" for c in password)
    assert "${" + name + ":?" in COMPOSE_POSTGRES_FILE.read_text()
    # --renew-tls keeps it: a new password would lock the vault out of the existing database.
    subprocess.run(
        [sys.executable, str(DEPLOY / "make_secrets.py"), str(out), "--renew-tls"],
        check=True,
        capture_output=True,
    )
    assert (out / "postgres.env").read_text().splitlines() == lines
