"""Resolve reads only candidate providers, and picks exactly what `select_provider` picks
over all of them (SPEC 2.6), whatever the providers, through creates, updates and deletes."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

from services.common.model_selection import select_provider
from services.vault.store import AuditRecord, ProviderRecord
from services.vault.store.vault_tables import SqlVaultStore
from services.vault.user_limits import UserLimits
from tests.support.databases import open_test_database

NAMES = ["a", "b", "c", "openai", "zeta"]
MODELS = ["m1", "m2", "a/m1", "b/x", "openai/gpt", "zeta/", "c/m2/deep", "shared", "org/m"]


def _audit() -> AuditRecord:
    return AuditRecord(datetime.now(UTC), "test", "alice", "x", (), "ok")


def _record(name: str, models: list[str]) -> ProviderRecord:
    blob = bytes([1, 3]) + b"dek" + bytes(28)  # a sealed-shaped blob; never opened here
    return ProviderRecord("alice", name, "custom", "https://h", tuple(models), "warn", blob)


def _queries() -> list[str]:
    names = [f"{n}/{m}" for n in NAMES + ["nobody"] for m in ("m1", "x", "")]
    return MODELS + names + ["unknown", "", "a/", "/m1"]


async def test_the_index_picks_what_select_provider_picks_over_all_providers(
    tmp_path: Path,
) -> None:
    store = SqlVaultStore(await open_test_database(tmp_path), UserLimits(max_providers=1000))
    rng = random.Random(14)
    try:
        for _ in range(40):
            name = rng.choice(NAMES)
            models = rng.sample(MODELS, rng.randint(0, 4))
            action = rng.random()
            if action < 0.2:
                await store.delete_provider("alice", name, audit=_audit())
            elif not await store.create_provider(_record(name, models), audit=_audit()):
                await store.update_provider(_record(name, models), audit=_audit())
            everyone = await store.list_providers("alice")
            for model in _queries():
                expected = select_provider(model, everyone)
                prefix, slash, rest = model.partition("/")
                rows = await store.get_model_resolve_rows(
                    "alice", model, prefix if slash and rest else None
                )
                assert len(rows.providers) <= 2
                got = select_provider(model, rows.providers)
                if expected is None:
                    assert got is None, model
                else:
                    assert got is not None, model
                    assert (got.provider.name, got.upstream_model, got.by_prefix) == (
                        expected.provider.name,
                        expected.upstream_model,
                        expected.by_prefix,
                    ), model
    finally:
        await store.close()
