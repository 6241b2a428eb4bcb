"""The store contract, on every backend (issue 16): what the stores promise over `Database`,
whichever database holds it, so that no behaviour exists on one backend only.

Each test runs on SQLite and on PostgreSQL (`conftest.vault_backend`). Failures are injected
either with a trigger written for the backend at hand or at the audit batch writer, never with
a backend's internals.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from services.vault.errors import LimitExceeded, StartupRefused
from services.vault.store import AuditRecord, StoredCredential, WrappedDataKey
from services.vault.store.database import Database
from services.vault.store.location import DatabaseLocation
from services.vault.store.rotation import RewrapConflict, SqlRotationStore
from services.vault.store.vault_tables import SqlVaultStore
from services.vault.user_limits import UserLimits
from tests.support.databases import open_test_database, raw_execute, raw_fetch
from tests.support.vault import database_for

# What a constraint or a refusing trigger raises, on either backend.
DATABASE_ERRORS = (sqlite3.DatabaseError, asyncpg.PostgresError)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await open_test_database(tmp_path)
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
def location(tmp_path: Path) -> DatabaseLocation:
    """Where `db` is stored (the same database, for direct reads and tampering)."""
    return database_for(tmp_path / "vault-state")


def _audit(action: str, user_id: str = "alice") -> AuditRecord:
    return AuditRecord(datetime.now(UTC), "test", user_id, action, ("k",), "ok")


def _sealed(plaintext: bytes) -> bytes:
    """A blob shaped as the sealed format (key id "k1"), whose plaintext size `user_limits`
    counts as `len(plaintext)`: 30 bytes of overhead plus the key id. (A put measures the map
    from its blobs: PostgreSQL refuses to read the key id's length from a blob of one byte.)"""
    return bytes([1, 2]) + b"k1" + bytes(28) + plaintext


def _refuse_audit_rows_of(location: DatabaseLocation, user_id: str) -> None:
    """Make every INSERT of an audit row for `user_id` fail (as a full disk would)."""
    if isinstance(location, Path):
        raw_execute(
            location,
            "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events"
            f" WHEN NEW.user_id = '{user_id}' BEGIN SELECT RAISE(ABORT, 'refused'); END",
        )
        return
    raw_execute(
        location,
        "CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        f" IF NEW.user_id = '{user_id}' THEN RAISE EXCEPTION 'refused'; END IF;"
        " RETURN NEW; END $$",
    )
    raw_execute(
        location,
        "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events"
        " FOR EACH ROW EXECUTE FUNCTION refuse_audit()",
    )


async def _actions(db: Database) -> list[str]:
    rows = await db.fetch_all("SELECT action FROM audit_events ORDER BY id")
    return [str(row[0]) for row in rows]


# -- data keys ----------------------------------------------------------------------------------


async def test_the_first_data_key_of_a_user_wins_and_every_adder_gets_it(db: Database) -> None:
    store = SqlVaultStore(db)
    first = WrappedDataKey("alice", "d1", "k1", b"first")
    assert await store.add_data_key(first) == first
    assert await store.add_data_key(WrappedDataKey("alice", "d2", "k1", b"second")) == first
    assert await store.get_data_key("alice") == first
    assert await store.get_data_key("bob") is None


async def test_concurrent_first_data_keys_of_one_user_agree_on_one(db: Database) -> None:
    store = SqlVaultStore(db)
    keys = [WrappedDataKey("alice", f"d{i}", "k1", f"key-{i}".encode()) for i in range(10)]
    results = await asyncio.gather(*(store.add_data_key(key) for key in keys))
    assert len(set(results)) == 1 and results[0] in keys
    assert await store.get_data_key("alice") == results[0]


# -- credentials --------------------------------------------------------------------------------


async def test_a_put_of_an_existing_key_updates_it_and_never_duplicates(
    db: Database, location: DatabaseLocation
) -> None:
    store = SqlVaultStore(db)
    assert await store.put_credential("alice", "k", b"v1", audit=_audit("put1"))
    assert await store.put_credential("alice", "k", b"v2", audit=_audit("put2"))
    assert await store.put_credential("bob", "k", b"bob's", audit=_audit("put3", "bob"))
    assert await store.get_credentials("alice") == {"k": StoredCredential(b"v2")}
    rows = raw_fetch(
        location, "SELECT user_id, key, blob FROM credentials ORDER BY user_id, key", ()
    )
    assert rows == [("alice", "k", b"v2"), ("bob", "k", b"bob's")]
    assert await _actions(db) == ["put1", "put2", "put3"]


async def test_the_database_refuses_a_second_row_for_one_user_and_key(
    db: Database, location: DatabaseLocation
) -> None:
    await SqlVaultStore(db).put_credential("alice", "k", b"v1", audit=_audit("put"))
    with pytest.raises(DATABASE_ERRORS):
        raw_execute(
            location,
            "INSERT INTO credentials (user_id, key, blob, hosts, updated_at)"
            " VALUES ('alice', 'k', ?, '', '2026-01-01T00:00:00.000000Z')",
            (b"v2",),
        )
    assert raw_fetch(location, "SELECT count(*) FROM credentials") == [(1,)]


async def test_a_replace_all_failing_midway_leaves_the_old_map(db: Database) -> None:
    store = SqlVaultStore(db)
    await store.replace_credentials("alice", {"a": b"old-a", "b": b"old-b"}, audit=_audit("r1"))
    # The second row breaks NOT NULL after the delete and the first insert have run.
    with pytest.raises(DATABASE_ERRORS):
        await store.replace_credentials(
            "alice",
            {"c": b"new-c", "d": None},  # type: ignore[dict-item]
            audit=_audit("r2"),
        )
    assert await store.get_credentials("alice") == {
        "a": StoredCredential(b"old-a"),
        "b": StoredCredential(b"old-b"),
    }
    assert await _actions(db) == ["r1"]


async def test_a_replace_all_over_the_limit_leaves_the_old_map_and_writes_no_audit_row(
    db: Database,
) -> None:
    store = SqlVaultStore(db, UserLimits(max_credential_bytes=100))
    old = {"a": _sealed(b"x" * 20), "b": _sealed(b"y" * 20)}
    await store.replace_credentials("alice", old, audit=_audit("r1"))
    with pytest.raises(LimitExceeded):
        await store.replace_credentials(
            "alice", {"a": _sealed(b"z" * 60), "c": _sealed(b"w" * 60)}, audit=_audit("r2")
        )
    assert await store.get_credentials("alice") == {k: StoredCredential(v) for k, v in old.items()}
    with pytest.raises(LimitExceeded):
        await store.put_credential("alice", "c", _sealed(b"w" * 80), audit=_audit("p1"))
    assert set(await store.get_credentials("alice")) == {"a", "b"}
    assert await _actions(db) == ["r1"]


async def test_a_change_whose_audit_row_fails_is_not_made(
    db: Database, location: DatabaseLocation
) -> None:
    # The audit row is written in the change's own transaction: no change without its record.
    store = SqlVaultStore(db)
    await store.replace_credentials("mallory", {"a": b"old-a"}, audit=_audit("r1", "alice"))
    _refuse_audit_rows_of(location, "mallory")
    with pytest.raises(DATABASE_ERRORS):
        await store.put_credential("mallory", "b", b"new-b", audit=_audit("put", "mallory"))
    with pytest.raises(DATABASE_ERRORS):
        await store.replace_credentials("mallory", {"c": b"c"}, audit=_audit("r2", "mallory"))
    with pytest.raises(DATABASE_ERRORS):
        await store.delete_credential("mallory", "a", audit=_audit("del", "mallory"))
    with pytest.raises(DATABASE_ERRORS):
        await store.delete_credentials("mallory", audit=_audit("del-all", "mallory"))
    assert await store.get_credentials("mallory") == {"a": StoredCredential(b"old-a")}
    assert await _actions(db) == ["r1"]
    # Another user's changes are audited and made as usual.
    assert await store.put_credential("alice", "k", _sealed(b"v"), audit=_audit("put-alice"))
    assert await _actions(db) == ["r1", "put-alice"]


async def test_concurrent_puts_to_one_users_map_lose_no_update(db: Database) -> None:
    store = SqlVaultStore(db)
    keys = [f"k{i:03d}" for i in range(40)]
    written = await asyncio.gather(
        *(store.put_credential("alice", k, k.encode(), audit=_audit(k)) for k in keys)
    )
    assert written == [True] * len(keys)
    assert await store.get_credentials("alice") == {k: StoredCredential(k.encode()) for k in keys}
    assert sorted(await _actions(db)) == keys


# -- rotation -----------------------------------------------------------------------------------


async def test_a_rewrap_batch_with_a_row_changed_meanwhile_changes_nothing(db: Database) -> None:
    store = SqlVaultStore(db)
    for user in ("alice", "bob"):
        await store.add_data_key(WrappedDataKey(user, f"d-{user}", "k1", f"k1-{user}".encode()))
    alice, bob = (await SqlRotationStore(db).data_keys_not_under("k2", 10))[:2]
    stale_bob = WrappedDataKey("bob", "d-bob", "k1", b"what it was before")
    with pytest.raises(RewrapConflict, match="'bob'"):
        await SqlRotationStore(db).replace_wrapped_data_keys(
            [
                (alice, WrappedDataKey("alice", "d-alice", "k2", b"k2-alice")),
                (stale_bob, WrappedDataKey("bob", "d-bob", "k2", b"k2-bob")),
            ]
        )
    assert await store.get_data_key("alice") == alice  # its update was rolled back
    assert await store.get_data_key("bob") == bob


# -- audit appends (group commit) ---------------------------------------------------------------


async def test_concurrent_audit_appends_are_committed_together_and_each_awaits_its_commit(
    db: Database, location: DatabaseLocation, monkeypatch: pytest.MonkeyPatch
) -> None:
    commits: list[int] = []
    audits = db._audits  # type: ignore[attr-defined]
    write_batch = audits._write

    async def counting(sql: str, params: Sequence[object]) -> None:
        commits.append(len(params) // 6)
        await write_batch(sql, params)

    monkeypatch.setattr(audits, "_write", counting)
    await asyncio.gather(*(db.append_audit(_audit(f"a{i}")) for i in range(50)))
    assert commits == [50]  # one transaction, one durable commit
    # Another connection sees every row once they returned, in the order they were appended.
    actions = [row[0] for row in raw_fetch(location, "SELECT action FROM audit_events ORDER BY id")]
    assert actions == [f"a{i}" for i in range(50)]


async def test_a_failed_audit_batch_fails_every_append_in_it_and_writes_none(
    db: Database, location: DatabaseLocation
) -> None:
    _refuse_audit_rows_of(location, "mallory")
    users = ["alice", "bob", "mallory", "carol"]
    results = await asyncio.gather(
        *(db.append_audit(_audit("resolve", user)) for user in users), return_exceptions=True
    )
    assert all(isinstance(r, DATABASE_ERRORS) for r in results), results
    assert len({type(r) for r in results}) == 1  # the batch's one error, given to each
    assert await db.fetch_all("SELECT user_id FROM audit_events") == []
    await db.append_audit(_audit("later"))  # the next batch is written
    assert await db.fetch_all("SELECT user_id, action FROM audit_events") == [("alice", "later")]


async def test_a_batch_writer_failure_fails_its_appends_and_not_the_next_batch(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    audits = db._audits  # type: ignore[attr-defined]
    write_batch = audits._write
    failures = [OSError("disk full")]

    async def failing_once(sql: str, params: Sequence[object]) -> None:
        if failures:
            raise failures.pop()
        await write_batch(sql, params)

    monkeypatch.setattr(audits, "_write", failing_once)
    results = await asyncio.gather(
        *(db.append_audit(_audit(f"a{i}")) for i in range(5)), return_exceptions=True
    )
    assert [type(r) for r in results] == [OSError] * 5
    await db.append_audit(_audit("later"))
    assert await _actions(db) == ["later"]


async def test_an_audit_append_whose_caller_gave_up_is_still_written(db: Database) -> None:
    append = asyncio.create_task(db.append_audit(_audit("cancelled")))
    await asyncio.sleep(0)  # queued
    append.cancel()
    with pytest.raises(asyncio.CancelledError):
        await append
    await db.append_audit(_audit("after"))
    assert await _actions(db) == ["cancelled", "after"]


# -- schema -------------------------------------------------------------------------------------


async def test_a_database_migrated_past_what_this_vault_knows_is_refused(
    tmp_path: Path, location: DatabaseLocation
) -> None:
    await (await open_test_database(tmp_path)).close()
    raw_execute(
        location,
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
        (9999, "from the future", "2099-01-01T00:00:00.000000Z"),
    )
    with pytest.raises(StartupRefused, match="schema version 9999"):
        await open_test_database(tmp_path)
