"""The PostgreSQL backend itself: replicas on one database (migrations, first data keys, the
advisory lock), the statement timeout, passwords kept out of what is shown, TLS."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from services.vault.errors import StartupRefused
from services.vault.keyring import Keyring, KeyringSource
from services.vault.row_seals import RowSealer
from services.vault.store import AuditRecord, StoredCredential, WrappedDataKey
from services.vault.store.location import PostgresUrl
from services.vault.store.postgres_db import PostgresDatabase, PostgresTransaction
from services.vault.store.postgres_schema import POSTGRES_MIGRATIONS
from services.vault.store.tokens import SqlAuthStore
from services.vault.store.vault_tables import SqlVaultStore
from services.vault.tokens import TokenInfo
from tests.support.databases import raw_execute, raw_fetch
from tests.support.postgres import fresh_postgres

pytestmark = pytest.mark.postgres_only("replicas, locks, timeouts and TLS of PostgreSQL")

PASSWORD = "s3cretpw"


@pytest.fixture
def url() -> Iterator[PostgresUrl]:
    with fresh_postgres("pgstore") as fresh:
        yield fresh


@pytest.fixture
async def replicas(url: PostgresUrl) -> AsyncIterator[tuple[PostgresDatabase, PostgresDatabase]]:
    """Two vault replicas' databases: two pools on one database."""
    first = await PostgresDatabase.open(url)
    second = await PostgresDatabase.open(url)
    try:
        yield first, second
    finally:
        await first.close()
        await second.close()


def _audit(action: str, user_id: str = "alice") -> AuditRecord:
    return AuditRecord(datetime.now(UTC), "test", user_id, action, (), "ok")


def _with(url: PostgresUrl, *, password: str | None = None, port: int | None = None) -> str:
    """The URL with a password and a port put in (the user and host kept)."""
    parts = urlsplit(url.url)
    user = parts.username or "postgres"
    netloc = f"{user}:{password}@" if password else f"{user}@"
    netloc += f"{parts.hostname}:{port or parts.port or 5432}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


async def test_replicas_starting_together_apply_each_migration_once(url: PostgresUrl) -> None:
    opened = await asyncio.gather(*(PostgresDatabase.open(url) for _ in range(5)))
    try:
        rows = raw_fetch(
            url, "SELECT version, count(*) FROM schema_migrations GROUP BY version ORDER BY version"
        )
        assert rows == [(m.version, 1) for m in POSTGRES_MIGRATIONS]
        # Every replica works on the one schema.
        for i, db in enumerate(opened):
            await SqlVaultStore(db).put_credential("alice", f"k{i}", b"v" * 40, audit=_audit("p"))
        assert len(await SqlVaultStore(opened[0]).get_credentials("alice")) == 5
    finally:
        for db in opened:
            await db.close()


async def test_two_replicas_adding_a_users_first_data_key_agree_on_one(
    replicas: tuple[PostgresDatabase, PostgresDatabase],
) -> None:
    stores = [SqlVaultStore(db) for db in replicas]
    for round_ in range(20):
        user = f"user{round_}"
        mine, theirs = (WrappedDataKey(user, f"d-{i}", "k1", f"key-{i}".encode()) for i in (0, 1))
        got = await asyncio.gather(stores[0].add_data_key(mine), stores[1].add_data_key(theirs))
        assert got[0] == got[1] and got[0] in (mine, theirs)
        assert await stores[0].get_data_key(user) == got[0]
    rows = raw_fetch(replicas[0].url, "SELECT count(*) FROM data_keys")
    assert rows == [(20,)]


async def test_replace_alls_on_two_replicas_end_with_one_map_never_a_mix(
    replicas: tuple[PostgresDatabase, PostgresDatabase],
) -> None:
    # Without the per-user advisory lock, READ COMMITTED lets the second replace's DELETE miss
    # the rows the first one inserted: the user would end with both maps.
    stores = [SqlVaultStore(db) for db in replicas]
    maps = [{f"{side}{i:02d}": f"{side}-{i}".encode() * 8 for i in range(20)} for side in "ab"]
    for round_ in range(10):
        await asyncio.gather(
            *(
                store.replace_credentials("alice", blobs, audit=_audit(f"r{round_}"))
                for store, blobs in zip(stores, maps, strict=True)
            )
        )
        stored = await stores[0].get_credentials("alice")
        assert stored in [{k: StoredCredential(v) for k, v in m.items()} for m in maps], sorted(
            stored
        )
    assert raw_fetch(replicas[0].url, "SELECT count(*) FROM audit_events") == [(20,)]


async def test_concurrent_puts_through_two_replicas_lose_no_update(
    replicas: tuple[PostgresDatabase, PostgresDatabase],
) -> None:
    stores = [SqlVaultStore(db) for db in replicas]
    keys = [f"k{i:03d}" for i in range(40)]
    await asyncio.gather(
        *(
            stores[i % 2].put_credential("alice", key, key.encode() * 4, audit=_audit(key))
            for i, key in enumerate(keys)
        )
    )
    assert sorted(await stores[1].get_credentials("alice")) == keys


async def test_a_statement_over_the_timeout_fails_instead_of_hanging(url: PostgresUrl) -> None:
    db = await PostgresDatabase.open(url, statement_timeout_ms=100)
    try:
        start = time.monotonic()
        # asyncpg's QueryCanceledError here; the error the vault maps it to, once it does.
        with pytest.raises(Exception, match="(?i)cancel|timeout|unavailable"):
            await asyncio.wait_for(db.fetch_all("SELECT pg_sleep(1)"), 5)
        assert time.monotonic() - start < 0.9
        assert await db.fetch_all("SELECT 1") == [(1,)]  # the pool still serves
    finally:
        await db.close()


async def test_a_password_is_never_shown(url: PostgresUrl) -> None:
    with_password = PostgresUrl(_with(url, password=PASSWORD))
    for shown in (repr(with_password), str(with_password), with_password.redacted):
        assert PASSWORD not in shown and ":***@" in shown
    # The test server trusts local logins: the password is not checked, only carried.
    db = await PostgresDatabase.open(with_password)
    try:
        assert PASSWORD not in repr(db) and PASSWORD not in str(db)
        assert await db.fetch_all("SELECT 1") == [(1,)]
    finally:
        await db.close()


async def test_an_unreachable_server_is_refused_without_the_password() -> None:
    unreachable = PostgresUrl(f"postgresql://nobody:{PASSWORD}@127.0.0.1:1/x")
    with pytest.raises(StartupRefused) as info:
        await asyncio.wait_for(PostgresDatabase.open(unreachable), 30)
    message = str(info.value)
    assert PASSWORD not in message and PASSWORD not in repr(info.value)
    assert "postgresql://nobody:***@127.0.0.1:1/x" in message


async def test_sslmode_require_uses_tls_or_is_refused_when_the_server_has_none(
    url: PostgresUrl,
) -> None:
    ((ssl,),) = raw_fetch(url, "SHOW ssl")
    required = PostgresUrl(url.url + ("&" if "?" in url.url else "?") + "sslmode=require")
    if ssl != "on":
        with pytest.raises(StartupRefused, match="cannot open the PostgreSQL database"):
            await asyncio.wait_for(PostgresDatabase.open(required), 30)
        return
    db = await asyncio.wait_for(PostgresDatabase.open(required), 30)
    try:
        rows = await db.fetch_all("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        assert rows == [(True,)]
    finally:
        await db.close()


async def test_a_rewrap_on_one_replica_never_undoes_a_revocation_committed_on_another(
    replicas: tuple[PostgresDatabase, PostgresDatabase],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Replica B revokes a token while replica A re-seals it under the new primary key: the
    re-seal read the row before the revocation committed, and must not overwrite the
    revocation's seal with one over the unrevoked row (which would let a database writer
    un-revoke the token by clearing `revoked_at`)."""
    a_db, b_db = replicas
    old = Keyring.generate("k1")
    k1 = old.get("k1")
    assert k1 is not None
    new = Keyring("k2", {"k1": k1, "k2": secrets.token_bytes(32)}, old.pepper)
    minting = SqlAuthStore(b_db, RowSealer(KeyringSource(tmp_path / "old", old)))
    info = TokenInfo(
        id="tok_race", user_id="alice", name="n", prefix="sk-aic-xx", scopes=("x",),
        created_at=1_800_000_000.0,
    )  # fmt: skip
    assert await minting.insert_token(info, b"d" * 32, audit=_audit("create"))
    resealing = SqlAuthStore(a_db, RowSealer(KeyringSource(tmp_path / "new", new)))
    revoking = SqlAuthStore(b_db, RowSealer(KeyringSource(tmp_path / "new", new)))

    # B's revocation holds its transaction open right after its UPDATE.
    updated = asyncio.Event()
    execute = PostgresTransaction.execute

    async def slow(self: PostgresTransaction, sql: str, params: Sequence[object] = ()) -> int:
        changed = await execute(self, sql, params)
        if sql.startswith("UPDATE api_tokens SET revoked_at"):
            updated.set()
            await asyncio.sleep(0.5)
        return changed

    monkeypatch.setattr(PostgresTransaction, "execute", slow)

    async def reseal() -> int:
        await updated.wait()
        return await resealing.reseal_rows_not_under("k2", 500)

    revoked, _ = await asyncio.gather(
        revoking.revoke_token("alice", "tok_race", 1_800_000_100.0, audit=_audit("revoke")),
        reseal(),
    )
    monkeypatch.undo()
    assert revoked is not None and revoked.revoked_at is not None
    stored = await resealing.get_token("tok_race")
    assert stored is not None and stored.revoked_at is not None  # intact, and revoked
    # Clearing revocation in the database (without the keyring) is refused, never accepted.
    raw_execute(a_db.url, "UPDATE api_tokens SET revoked_at = NULL WHERE id = ?", ("tok_race",))
    assert await resealing.get_token("tok_race") is None
