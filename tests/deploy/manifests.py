"""Loading deploy/: the kustomize output of deploy/k8s and the compose file, without tools.

`render_kustomization` implements exactly the subset of kustomize that deploy/k8s and its
overlays use (`resources` as plain files or a base directory, `namespace`, `images`, and
`patches` that delete a whole object) and refuses anything else, so a new feature in a
kustomization.yaml cannot silently go unrendered. Where `kubectl kustomize` exists the tests
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
POSTGRES_OVERLAY = DEPLOY / "k8s-overlays" / "postgres"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
COMPOSE_POSTGRES_FILE = DEPLOY / "compose.postgres.yml"

_SUPPORTED_KEYS = {"apiVersion", "kind", "namespace", "resources", "images", "patches"}
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
        if path.is_dir():
            # A base: rendered with its own transformations, then given ours as well.
            objects.extend(render_kustomization(path))
        elif path.is_file():
            objects.extend(load_yaml_documents(path))
        else:
            raise ValueError(f"resource {resource} is neither a file nor a directory")
    for patch in kustomization.get("patches", []):
        objects = _apply_delete_patch(objects, directory, patch)
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


def _apply_delete_patch(objects: list[Obj], directory: Path, patch: Obj) -> list[Obj]:
    """`patches: [{path: file}]` where the file is a strategic-merge `$patch: delete` of one
    whole object; the objects without it. Any other kind of patch is refused."""
    if set(patch) != {"path"}:
        raise ValueError(f"patch {patch} is not just a `path`: teach render_kustomization")
    documents = load_yaml_documents(directory / patch["path"])
    if len(documents) != 1 or documents[0].get("$patch") != "delete":
        raise ValueError(
            f"patch {patch['path']} is not one `$patch: delete`: teach render_kustomization"
        )
    target = documents[0]
    meta = target["metadata"]
    if set(target) != {"$patch", "apiVersion", "kind", "metadata"} or not set(meta) <= {
        "name",
        "namespace",
    }:
        raise ValueError(f"patch {patch['path']} deletes more than an object by name")

    def matches(obj: Obj) -> bool:
        return (
            (obj["apiVersion"], obj["kind"]) == (target["apiVersion"], target["kind"])
            and obj["metadata"]["name"] == meta["name"]
            and meta.get("namespace", obj["metadata"].get("namespace"))
            == obj["metadata"].get("namespace")
        )

    kept = [obj for obj in objects if not matches(obj)]
    if len(kept) != len(objects) - 1:
        raise ValueError(f"patch {patch['path']} matches {len(objects) - len(kept)} objects, not 1")
    return kept


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


def load_compose_override(path: Path = COMPOSE_POSTGRES_FILE) -> Obj:
    """An override file as YAML."""
    return load_yaml_documents(path)[0]


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
