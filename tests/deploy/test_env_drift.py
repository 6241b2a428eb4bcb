"""No drift between the code and what deploy/ (and `make run`) configure.

Every environment variable the compose file, the Kubernetes manifests or `make run`
(devtools.run) set for a service is one that service's settings actually read; the names come
from calling each `Settings.from_env` with a recording environment (tests/deploy/service_env.py).
"""

from __future__ import annotations

import re

import pytest

from tests.deploy.manifests import (
    compose_environment,
    k8s_environment,
    load_compose,
    render_kustomization,
)
from tests.deploy.service_env import ROOT, SERVICES, settings_classes, variables_read


def _read(service: str) -> set[str]:
    if not settings_classes(service):
        pytest.fail(f"services/{service} has no settings class with from_env")
    return variables_read(service)


def test_each_service_reads_its_prefix_and_the_shared_state_dir() -> None:
    for service in SERVICES:
        names = _read(service)
        assert f"{service.upper()}_LISTEN" in names
        # Besides: OpenTelemetry's standard OTEL_* variables (services/common/tracing_setup.py).
        assert names <= {"STATE_DIR"} | {
            n for n in names if n.startswith((service.upper() + "_", "OTEL_"))
        }


@pytest.mark.parametrize("service", SERVICES)
def test_compose_sets_only_variables_the_service_reads(service: str) -> None:
    env = compose_environment(load_compose()["services"][service])
    unknown = set(env) - _read(service)
    assert not unknown, f"docker-compose.yml sets {sorted(unknown)} that {service} never reads"


@pytest.mark.parametrize("service", SERVICES)
def test_kubernetes_sets_only_variables_the_service_reads(service: str) -> None:
    env = k8s_environment(render_kustomization())[service]
    unknown = set(env) - _read(service)
    assert not unknown, f"deploy/k8s sets {sorted(unknown)} that {service} never reads"


def test_configuration_page_names_every_variable() -> None:
    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", page))
    for service in SERVICES:
        missing = _read(service) - documented
        assert not missing, f"docs/configuration.md lacks {sorted(missing)}"
