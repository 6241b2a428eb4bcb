"""Scraping a service's `/metrics` over HTTP and reading it with Prometheus' own text parser."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


@dataclass(frozen=True)
class Scrape:
    """One scrape, parsed: every sample of every family."""

    samples: list[Sample]
    families: set[str]

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples named `name` whose labels include `labels` (0 if none)."""
        return sum(
            s.value
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )

    def label_values(self) -> list[str]:
        """Every label value of every sample (the histogram bucket bounds `le` left out)."""
        return [v for s in self.samples for k, v in s.labels.items() if k != "le"]

    def leaks(self, secrets: Iterable[str]) -> list[tuple[str, str]]:
        """(secret, label value) pairs where a label value holds one of `secrets`."""
        values = self.label_values()
        return [(secret, v) for secret in secrets for v in values if secret and secret in v]


async def scrape(port: int, path: str = "/metrics") -> Scrape:
    """GET `http://127.0.0.1:<port><path>` and parse it with the Prometheus text parser."""
    async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
        response = await client.get(f"http://127.0.0.1:{port}{path}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: list[Sample] = []
    families: set[str] = set()
    for family in text_string_to_metric_families(response.text):
        families.add(family.name)
        samples.extend(Sample(s.name, dict(s.labels), s.value) for s in family.samples)
    return Scrape(samples, families)


def delta(before: Scrape, after: Scrape, name: str, **labels: str) -> float:
    """How much a sample (summed over the labels not given) moved between two scrapes."""
    return after.value(name, **labels) - before.value(name, **labels)
