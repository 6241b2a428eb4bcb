"""Loading deploy/: the kustomize output of deploy/k8s and the compose file, without tools.

`render_kustomization` implements exactly the subset of kustomize that deploy/k8s uses
(`resources` as plain files, `namespace`, `images`) and refuses anything else, so a new feature
in kustomization.yaml cannot silently go unrendered. Where `kubectl kustomize` exists the tests
compare the two.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"

_SUPPORTED_KEYS = {"apiVersion", "kind", "namespace", "resources", "images"}
# Kinds this project uses that are cluster-scoped (kustomize leaves their namespace alone).
_CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume"}

Obj = dict[str, Any]


def load_yaml_documents(path: Path) -> list[Obj]:
    with path.open(encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def _containers(obj: Obj) -> Iterator[Obj]:
    spec = obj.get("spec", {})
    pod = spec.get("template", {}).get("spec") if "template" in spec else None
    if obj.get("kind") == "Pod":
        pod = spec
    if pod:
        yield from pod.get("initContainers", [])
        yield from pod.get("containers", [])


def pod_spec(obj: Obj) -> Obj:
    spec: Obj = obj["spec"]["template"]["spec"]
    return spec


def containers(obj: Obj) -> list[Obj]:
    return list(_containers(obj))


def render_kustomization(directory: Path = K8S) -> list[Obj]:
    """The objects `kubectl kustomize directory` would print (for the subset we use)."""
    kustomization = load_yaml_documents(directory / "kustomization.yaml")[0]
    unknown = set(kustomization) - _SUPPORTED_KEYS
    if unknown:
        raise ValueError(f"kustomization.yaml uses {sorted(unknown)}: teach render_kustomization")
    objects: list[Obj] = []
    for resource in kustomization.get("resources", []):
        path = directory / resource
        if not path.is_file():
            raise ValueError(f"resource {resource} is not a file")
        objects.extend(load_yaml_documents(path))
    namespace = kustomization.get("namespace")
    images = {i["name"]: i for i in kustomization.get("images", [])}
    for obj in objects:
        if namespace and obj["kind"] not in _CLUSTER_SCOPED:
            obj["metadata"]["namespace"] = namespace
        if obj["kind"] == "Namespace" and namespace:
            obj["metadata"]["name"] = namespace
        for container in _containers(obj):
            name, _, tag = container["image"].partition(":")
            if name in images:
                new = images[name]
                container["image"] = f"{new.get('newName', name)}:{new.get('newTag', tag)}"
    return objects


def kubectl_kustomize(directory: Path = K8S) -> list[Obj] | None:
    """`kubectl kustomize` output parsed, or None where kubectl (with kustomize) is missing."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return None
    try:
        result = subprocess.run(
            [kubectl, "kustomize", str(directory)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        if "unknown command" in result.stderr:
            return None
        raise AssertionError(f"kubectl kustomize failed: {result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]


def load_compose() -> Obj:
    """The compose file as YAML (merge keys resolved by PyYAML); x-* extension keys dropped."""
    data = load_yaml_documents(COMPOSE_FILE)[0]
    return {k: v for k, v in data.items() if not k.startswith("x-")}


def compose_environment(service: Obj) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        return dict(item.partition("=")[::2] for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def k8s_environment(objects: list[Obj]) -> dict[str, dict[str, str]]:
    """Container name -> the environment variables the manifests set on it."""
    envs: dict[str, dict[str, str]] = {}
    for obj in objects:
        for container in _containers(obj):
            env = {e["name"]: str(e.get("value", "")) for e in container.get("env", [])}
            envs.setdefault(container["name"], {}).update(env)
    return envs
