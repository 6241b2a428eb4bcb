"""The vault's Prometheus metrics beyond its RPCs (those, `Resolve` and `Authenticate` latency
included, are the interceptor's: `services.common.metrics.RpcMetrics`).

The events counted here happen deep in the domain and the store, under whichever object runs
them: a group commit of audit rows, a blob that does not open, a row that fails its seal. Like
loggers, their metrics are module-level and process-wide, made unregistered; `vault_registry`
adds them to the registry a vault exports (one per vault; several vaults in one test process
show the same process-wide counts). Threading a metrics object through every constructor for
a counter would be noise, and these are facts about the process, not about one object.

Labels, each of a fixed small set; never a user id, a credential key or value, a token or a
provider name:

- `blob`: what failed to open: `value` (a credential value or provider headers, under a user's
  data key) or `data_key` (a user's data key, under a master key);
- `row_kind`: the kind of row that failed its integrity check (`api_token`, `session`,
  `provider`, `credential`: `row_seals`);
- `key_id`, `role`: the master keys of the keyring file (their ids are chosen by the operator,
  a handful, already in the start-up log line; never key material).
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from services.vault.keyring import KeyringSource

AUDIT_BATCH_ROWS = Histogram(
    "aicreds_vault_audit_batch_rows",
    "Audit rows written by one group commit (store/audit_batches.py; at most 160).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 160),
    registry=None,
)
DECRYPT_ERRORS = Counter(
    "aicreds_vault_decrypt_errors_total",
    "Stored blobs that did not open (altered, truncated, or for another place), by what they"
    " hold: value or data_key.",
    ["blob"],
    registry=None,
)
INTEGRITY_ERRORS = Counter(
    "aicreds_vault_integrity_errors_total",
    "Stored rows refused because they failed their integrity check, by row kind.",
    ["row_kind"],
    registry=None,
)

VALUE_BLOB = "value"
DATA_KEY_BLOB = "data_key"


class MasterKeysCollector(Collector):
    """`aicreds_vault_master_keys{key_id, role}`: 1 for each key of the keyring file, read at
    each scrape (the keyring reloads when its file changes)."""

    def __init__(self, keyring: KeyringSource) -> None:
        self._keyring = keyring

    def collect(self) -> Iterable[GaugeMetricFamily]:
        current = self._keyring.current
        family = GaugeMetricFamily(
            "aicreds_vault_master_keys",
            "Master keys of the keyring file (1 each), by key id and role (primary: seals new"
            " data keys; secondary: still opens what was sealed with it).",
            labels=["key_id", "role"],
        )
        for key_id in current.key_ids:
            role = "primary" if key_id == current.primary_id else "secondary"
            family.add_metric([key_id, role], 1)
        yield family


def vault_registry(keyring: KeyringSource) -> CollectorRegistry:
    """A registry with the vault's own metrics (the server adds its RPC metrics to it)."""
    registry = CollectorRegistry(auto_describe=True)
    for collector in (AUDIT_BATCH_ROWS, DECRYPT_ERRORS, INTEGRITY_ERRORS):
        registry.register(collector)
    registry.register(MasterKeysCollector(keyring))
    return registry
