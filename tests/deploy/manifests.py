"""Loading deploy/: the kustomize output of deploy/k8s and the compose file, without tools.

`render_kustomization` implements exactly the subset of kustomize that deploy/k8s and its
overlays use (`resources` as plain files or a base directory, `namespace`, `images`, and
`patches` from a file that either delete a whole object or are a strategic merge of maps and of
the name-keyed lists `containers` and `env`) and refuses anything else, so a new feature in a
kustomization.yaml cannot silently go unrendered. Where `kubectl kustomize` exists the tests
compare the two.
"""

from __future__ import annotations

import copy
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
# The lists a strategic-merge patch may merge into, element by element, matched by `name` (as
# Kubernetes' patchMergeKey has them); any other list in a patch would replace the whole list,
# which the renderer does not do.
_MERGE_LISTS = {"containers", "env"}
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
        objects = _apply_patch(objects, directory, patch)
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


def _apply_patch(objects: list[Obj], directory: Path, patch: Obj) -> list[Obj]:
    """`patches: [{path: file}]` where the file is one strategic-merge patch: a `$patch: delete`
    of one whole object, or a merge into one object (`_merge`). Any other patch is refused."""
    if set(patch) != {"path"}:
        raise ValueError(f"patch {patch} is not just a `path`: teach render_kustomization")
    documents = load_yaml_documents(directory / patch["path"])
    if len(documents) != 1:
        raise ValueError(f"patch {patch['path']} is not one document: teach render_kustomization")
    target = documents[0]
    meta = target.get("metadata", {})
    named = {"apiVersion", "kind", "metadata"} <= set(target) and "name" in meta
    if not named or not set(meta) <= {"name", "namespace"}:
        raise ValueError(
            f"patch {patch['path']} does not name its target by apiVersion, kind and name alone"
        )

    def matches(obj: Obj) -> bool:
        return (
            (obj["apiVersion"], obj["kind"]) == (target["apiVersion"], target["kind"])
            and obj["metadata"]["name"] == meta["name"]
            and meta.get("namespace", obj["metadata"].get("namespace"))
            == obj["metadata"].get("namespace")
        )

    found = [i for i, obj in enumerate(objects) if matches(obj)]
    if len(found) != 1:
        raise ValueError(f"patch {patch['path']} matches {len(found)} objects, not 1")
    (index,) = found
    if "$patch" in target:
        if target["$patch"] != "delete" or set(target) != {
            "$patch",
            "apiVersion",
            "kind",
            "metadata",
        }:
            raise ValueError(
                f"patch {patch['path']} is neither one `$patch: delete` of an object by name "
                "nor a plain merge: teach render_kustomization"
            )
        return objects[:index] + objects[index + 1 :]
    body = {k: v for k, v in target.items() if k not in {"apiVersion", "kind", "metadata"}}
    merged = copy.deepcopy(objects[index])
    _merge(merged, body, f"{patch['path']}:")
    return [*objects[:index], merged, *objects[index + 1 :]]


def _merge(dest: Obj, patch: Obj, where: str) -> None:
    """Strategic merge of `patch` into `dest`, for the part kustomize and the API server agree
    on without schema: maps merge key by key, scalars replace, and the lists of `_MERGE_LISTS`
    merge their elements by `name` (the patch's elements first, in its order, each merged into
    the element of the same name if there is one, then the elements it does not name, as
    kustomize orders them). Directives (`$patch`, `$setElementOrder/...`), null (a deletion)
    and any other list are refused."""
    for key, value in patch.items():
        at = f"{where}{key}"
        if key.startswith("$"):
            raise ValueError(f"patch directive {at} is not supported: teach render_kustomization")
        if value is None:
            raise ValueError(f"patch deletes {at} (null): teach render_kustomization")
        if isinstance(value, dict):
            current = dest.setdefault(key, {})
            if not isinstance(current, dict):
                raise ValueError(f"patch merges a map into {at}, which is not one")
            _merge(current, value, at + ".")
        elif isinstance(value, list):
            if key not in _MERGE_LISTS:
                raise ValueError(
                    f"patch replaces the list {at} (only {sorted(_MERGE_LISTS)} merge by "
                    "name): teach render_kustomization"
                )
            dest[key] = _merge_named_list(dest.get(key, []), value, at)
        else:
            dest[key] = value


def _merge_named_list(current: list[Obj], patch: list[Any], where: str) -> list[Obj]:
    if not all(isinstance(item, dict) and "name" in item for item in patch):
        raise ValueError(f"patch {where} has an element without a `name`")
    by_name = {item["name"]: item for item in current}
    if len(by_name) != len(current):
        raise ValueError(f"{where} has two elements of one name")
    merged: list[Obj] = []
    for item in patch:
        element = copy.deepcopy(by_name.get(item["name"], {}))
        _merge(element, item, f"{where}[{item['name']}].")
        merged.append(element)
    named = {item["name"] for item in patch}
    return merged + [item for item in current if item["name"] not in named]


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
