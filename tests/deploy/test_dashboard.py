"""The Grafana dashboard (deploy/grafana) and the scrape annotations: every query names metrics
the services export, and every service's pods say where to scrape them."""

from __future__ import annotations

import json
import re
from typing import Any

from tests.deploy.manifests import DEPLOY, ROOT, render_kustomization

DASHBOARD = DEPLOY / "grafana" / "aicreds-dashboard.json"
_METRIC = re.compile(r"\baicreds_[a-z_]+")
_SUFFIXES = ("_bucket", "_count", "_sum", "_total")


def _exported_names() -> set[str]:
    """Metric names the services' code defines (as prometheus-client is given them)."""
    names: set[str] = set()
    for path in (ROOT / "services").rglob("*.py"):
        names.update(re.findall(r'"(aicreds_[a-z_]+)"', path.read_text(encoding="utf-8")))
    # The RPC metrics are named per service from one template.
    for service in ("router", "vault"):
        for metric in ("grpc_requests_total", "grpc_request_duration_seconds",
                       "grpc_requests_in_flight"):  # fmt: skip
            names.add(f"aicreds_{service}_{metric}")
    return names


def _base_name(name: str) -> str:
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _queries(dashboard: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def test_every_dashboard_query_names_metrics_the_services_export() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exported = _exported_names()
    used = {name for expr in _queries(dashboard) for name in _METRIC.findall(expr)}
    assert used
    unknown = sorted(n for n in used if n not in exported and _base_name(n) not in exported)
    assert not unknown, f"the dashboard queries metrics nothing exports: {unknown}"


def test_the_dashboard_has_the_panels_an_operator_looks_at_first() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    titles = " | ".join(panel["title"].lower() for panel in dashboard["panels"])
    for topic in ("calls per second", "error rate", "latency", "tokens", "vault", "pool"):
        assert topic in titles, topic
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"  # no fixed datasource


def test_every_service_pod_is_annotated_for_scraping() -> None:
    for obj in render_kustomization():
        if obj["kind"] != "Deployment" and obj["kind"] != "StatefulSet":
            continue
        template = obj["spec"]["template"]
        component = template["metadata"]["labels"]["app.kubernetes.io/component"]
        annotations = template["metadata"].get("annotations", {})
        assert annotations.get("prometheus.io/scrape") == "true", component
        port = int(annotations["prometheus.io/port"])
        ports = {
            p["containerPort"] for c in template["spec"]["containers"] for p in c.get("ports", [])
        }
        assert port in ports, (component, port, ports)
        assert annotations["prometheus.io/path"] == "/metrics"


def test_the_dashboard_file_is_what_the_docs_point_to() -> None:
    operations = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    assert str(DASHBOARD.relative_to(ROOT)) in operations
