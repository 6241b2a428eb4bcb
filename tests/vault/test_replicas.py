"""Three vault processes on one PostgreSQL database (issue 16): nothing lost, nothing half done.

Every test starts real vault processes (`tests/vault/_replicas.py`) sharing one keyring file,
one callers file and one fresh database, and talks to them over gRPC as the gateway does, with
calls spread over the replicas. What is stored is then checked through the replicas and
directly in the database (`raw_fetch`). Each test prints what it measured (shown on failure,
or with `pytest -s`).
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from collections.abc import Awaitable
from pathlib import Path

import grpc
import grpc.aio
import pytest
from aicreds.vault.v1 import providers_pb2 as ppb
from aicreds.vault.v1.providers_pb2_grpc import ProviderServiceStub

from tests.support.databases import raw_fetch
from tests.support.vault import prepare_vault_files
from tests.vault._replicas import (
    RPC_TIMEOUT,
    RUN_TIMEOUT,
    audit_rows,
    credential_stubs,
    data_keys_per_user,
    duplicate_credential_rows,
    put_value,
    read_map,
    replace_map,
    running_replicas,
    until,
)

pytestmark = pytest.mark.postgres_only("replicas share one PostgreSQL database")


HOT_USERS = ("hot0", "hot1", "hot2")
PUT_WORKERS = 12
PUTS_PER_WORKER = 15
REPLACE_WORKERS = 3
REPLACES_PER_WORKER = 10
PROVIDER_WORKERS = 3
PROVIDERS_PER_WORKER = 6
PROVIDER_USER = "hot1"  # providers are written beside that user's concurrent puts


def _provider(name: str) -> ppb.Provider:
    return ppb.Provider(
        name=name,
        kind=ppb.PROVIDER_KIND_OPENAI,
        base_url="https://api.openai.com/v1",
        headers={"Authorization": ppb.HeaderValues(values=["Bearer {{credential:openai_key}}"])},
        models=[f"model-{name}"],
        on_missing_credential=ppb.ON_MISSING_CREDENTIAL_WARN,
    )


async def test_concurrent_writes_through_three_replicas_keep_every_acknowledged_write_once(
    tmp_path: Path,
) -> None:
    files = prepare_vault_files(tmp_path)
    async with running_replicas(files, tmp_path) as replicas:
        creds = credential_stubs(replicas)
        provider_stubs = [ProviderServiceStub(replicas.channel(i)) for i in range(3)]
        turn = 0

        def next_replica() -> int:
            """Round robin: every call goes to the next replica."""
            nonlocal turn
            turn += 1
            return turn % len(replicas)

        puts: dict[tuple[str, str], str] = {}  # acknowledged (user, key) -> value
        shared_values: list[str] = []  # acknowledged values of hot0's `shared` (every worker)
        maps: dict[str, dict[str, str]] = {}  # user -> last acknowledged replace-all
        replaces: Counter[str] = Counter()
        providers: list[str] = []

        async def put_worker(w: int) -> None:
            for i in range(PUTS_PER_WORKER):
                if i % 5 == 4:  # every worker also overwrites one key of the same user
                    user, key, value = "hot0", "shared", f"sk-shared-{w}-{i}"
                    await put_value(creds[next_replica()], user, key, value)
                    shared_values.append(value)
                    continue
                user, key = HOT_USERS[(w + i) % len(HOT_USERS)], f"w{w}_k{i}"
                value = f"sk-put-{user}-{key}-0123456789"
                await put_value(creds[next_replica()], user, key, value)
                puts[(user, key)] = value

        async def replace_worker(t: int) -> None:
            user = f"map{t}"
            for generation in range(REPLACES_PER_WORKER):
                credentials = {f"m{j}": f"sk-{user}-gen{generation}-{j}" for j in range(8)}
                await replace_map(creds[next_replica()], user, credentials)
                maps[user] = credentials
                replaces[user] += 1

        async def provider_worker(t: int) -> None:
            for i in range(PROVIDERS_PER_WORKER):
                name = f"p{t}_{i}"
                await provider_stubs[next_replica()].CreateProvider(
                    ppb.CreateProviderRequest(user_id=PROVIDER_USER, provider=_provider(name)),
                    timeout=RPC_TIMEOUT,
                )
                providers.append(name)

        async with asyncio.timeout(RUN_TIMEOUT):
            await asyncio.gather(
                *(put_worker(w) for w in range(PUT_WORKERS)),
                *(replace_worker(t) for t in range(REPLACE_WORKERS)),
                *(provider_worker(t) for t in range(PROVIDER_WORKERS)),
            )
        writes = len(puts) + len(shared_values) + sum(replaces.values()) + len(providers)
        print(
            f"acknowledged: {len(puts)} distinct puts, {len(shared_values)} puts of one shared"
            f" key, {sum(replaces.values())} replace-alls, {len(providers)} providers"
            f" ({writes} writes over 3 replicas)"
        )
        assert writes == (
            PUT_WORKERS * PUTS_PER_WORKER
            + REPLACE_WORKERS * REPLACES_PER_WORKER
            + PROVIDER_WORKERS * PROVIDERS_PER_WORKER
        )

        # Every replica reads every acknowledged write, and the same last value of `shared`.
        shared_seen = set()
        for stub in creds:
            for user in HOT_USERS:
                got = await read_map(stub, user)
                if user == "hot0":
                    shared_seen.add(got.pop("shared"))
                assert got == {k: v for (u, k), v in puts.items() if u == user}, user
            for user, credentials in maps.items():
                assert await read_map(stub, user) == credentials, user
        for stub in provider_stubs:
            listed = await stub.ListProviders(
                ppb.ListProvidersRequest(user_id=PROVIDER_USER), timeout=RPC_TIMEOUT
            )
            assert sorted(p.name for p in listed.providers) == sorted(providers)
        assert len(shared_seen) == 1 and shared_seen <= set(shared_values), shared_seen

    # In the database: each (user, key) once, one data key per user.
    assert duplicate_credential_rows(files) == []
    stored = raw_fetch(files.database, "SELECT COUNT(*) FROM credentials")[0][0]
    assert stored == len(puts) + 1 + sum(len(m) for m in maps.values())
    assert data_keys_per_user(files) == {u: 1 for u in [*HOT_USERS, *maps]}

    # Exactly one audit row per acknowledged change, each `ok`.
    put_audit = audit_rows(files, "credentials.put")
    assert {outcome for _, _, outcome in put_audit} == {"ok"}
    expected_puts = Counter((user, (key,)) for user, key in puts)
    expected_puts[("hot0", ("shared",))] = len(shared_values)
    assert Counter((user, keys) for user, keys, _ in put_audit) == expected_puts
    replace_audit = audit_rows(files, "credentials.replace")
    assert {outcome for _, _, outcome in replace_audit} == {"ok"}
    assert Counter(user for user, _, _ in replace_audit) == replaces
    provider_audit = audit_rows(files, "providers.create")
    assert {outcome for _, _, outcome in provider_audit} == {"ok"}
    assert sorted(keys for _, keys, _ in provider_audit) == sorted((n,) for n in providers)
    assert {user for user, _, _ in provider_audit} == {PROVIDER_USER}


# --- 2. two replicas replacing one map at once --------------------------------------------------

REPLACE_ROUNDS = 25


async def test_two_replicas_replacing_one_map_at_once_leave_exactly_one_of_the_maps(
    tmp_path: Path,
) -> None:
    files = prepare_vault_files(tmp_path)
    user = "contested"
    winners: Counter[str] = Counter()
    async with running_replicas(files, tmp_path) as replicas:
        creds = credential_stubs(replicas)
        async with asyncio.timeout(RUN_TIMEOUT):
            for n in range(REPLACE_ROUNDS):
                a, b, reader = n % 3, (n + 1) % 3, (n + 2) % 3
                # The maps overlap on k6..k11: a mix of the two would show there too.
                map_a = {f"k{j}": f"sk-A{n}-{j}" for j in range(12)}
                map_b = {f"k{j}": f"sk-B{n}-{j}" for j in range(6, 18)}
                await asyncio.gather(
                    replace_map(creds[a], user, map_a), replace_map(creds[b], user, map_b)
                )
                got = await read_map(creds[reader], user)
                assert got in (map_a, map_b), f"round {n}: a mix of the two maps: {got}"
                winners["A" if got == map_a else "B"] += 1
                rows = raw_fetch(
                    files.database, "SELECT COUNT(*) FROM credentials WHERE user_id = ?", (user,)
                )
                assert rows[0][0] == len(got)
    print(f"{REPLACE_ROUNDS} rounds of two simultaneous replace-alls; last writer: {winners}")
    replace_audit = audit_rows(files, "credentials.replace")
    assert len(replace_audit) == 2 * REPLACE_ROUNDS
    assert {outcome for _, _, outcome in replace_audit} == {"ok"}
    assert data_keys_per_user(files) == {user: 1}


# --- 3. a new user's first data key, made by two replicas at once -------------------------------

NEW_USERS = 30


async def test_two_replicas_making_a_new_users_first_data_key_at_once_agree_on_one(
    tmp_path: Path,
) -> None:
    files = prepare_vault_files(tmp_path)
    users = [f"newcomer{n:02d}" for n in range(NEW_USERS)]
    pairs = {user: (n % 3, (n + 1) % 3) for n, user in enumerate(users)}

    def value(user: str, replica: int) -> str:
        return f"sk-first-{user}-via-{replica}-0123456789"

    async with running_replicas(files, tmp_path) as replicas:
        creds = credential_stubs(replicas)
        # Both first writes of every new user at once: neither replica has its data key yet.
        async with asyncio.timeout(RUN_TIMEOUT):
            await asyncio.gather(
                *(
                    put_value(creds[r], user, f"from{r}", value(user, r))
                    for user, pair in pairs.items()
                    for r in pair
                )
            )
        per_user = data_keys_per_user(files)
        assert per_user == {user: 1 for user in users}
        # Each replica reads what the other wrote (sealed under the one data key), as does the
        # third, which made none.
        for user, pair in pairs.items():
            expected = {f"from{r}": value(user, r) for r in pair}
            for stub in creds:
                assert await read_map(stub, user) == expected, user
    print(f"{NEW_USERS} new users, each first written by two replicas at once: one data key each")


# --- 4. SIGKILL of one replica mid-write --------------------------------------------------------

VICTIM = 2
MAP_SIZE = 16


async def test_sigkill_of_one_replica_mid_write_loses_nothing_and_the_others_keep_answering(
    tmp_path: Path,
) -> None:
    files = prepare_vault_files(tmp_path)
    sent_puts: dict[str, str] = {}
    acked_puts: dict[str, str] = {}
    sent_generation: dict[str, int] = {}
    acked_generation: dict[str, int] = {}
    contested_tags: set[str] = set()
    successes = [0, 0, 0]
    after_kill = [0, 0, 0]
    unanswered = [0, 0, 0]
    failures: list[str] = []
    killed = asyncio.Event()
    stop = asyncio.Event()

    async with running_replicas(files, tmp_path) as replicas:
        creds = credential_stubs(replicas)

        async def call(replica: int, write: Awaitable[None]) -> bool:
            """Whether the write was acknowledged; a failure is allowed of the victim only,
            once it is being killed."""
            try:
                await write
            except grpc.aio.AioRpcError as err:
                unanswered[replica] += 1
                if replica != VICTIM or not killed.is_set():
                    failures.append(f"replica {replica}: {err.code()} {err.details()}")
                return False
            successes[replica] += 1
            if killed.is_set():
                after_kill[replica] += 1
            return True

        async def put_worker(replica: int, worker: int) -> None:
            i = 0
            while not stop.is_set():
                key, value = f"r{replica}w{worker}_k{i}", f"sk-put-{replica}-{worker}-{i}"
                sent_puts[key] = value
                if not await call(replica, put_value(creds[replica], "puts", key, value)):
                    return
                acked_puts[key] = value
                i += 1

        async def own_map_worker(replica: int) -> None:
            user, generation = f"map{replica}", 0
            while not stop.is_set():
                credentials = {f"m{j}": f"sk-{user}-gen{generation}" for j in range(MAP_SIZE)}
                sent_generation[user] = generation
                if not await call(replica, replace_map(creds[replica], user, credentials)):
                    return
                acked_generation[user] = generation
                generation += 1

        async def contested_map_worker(replica: int) -> None:
            generation = 0
            while not stop.is_set():
                tag = f"r{replica}-gen{generation}"
                contested_tags.add(tag)
                credentials = {f"m{j}": f"sk-{tag}" for j in range(MAP_SIZE)}
                if not await call(replica, replace_map(creds[replica], "contested", credentials)):
                    return
                generation += 1

        workers = [
            asyncio.create_task(work)
            for r in range(3)
            for work in (
                put_worker(r, 0),
                put_worker(r, 1),
                own_map_worker(r),
                contested_map_worker(r),
            )
        ]
        try:
            # Kill once writes flow through every replica, while the victim's are in flight.
            await until(lambda: min(successes) >= 30 or bool(failures), 20, "writes to flow")
            assert not failures, failures
            killed.set()
            assert await replicas.kill(VICTIM) == -signal.SIGKILL
            survivors = [r for r in range(3) if r != VICTIM]
            await until(
                lambda: min(after_kill[r] for r in survivors) >= 40 or bool(failures),
                20,
                "the surviving replicas to answer after the kill",
            )
        finally:
            stop.set()
            async with asyncio.timeout(RUN_TIMEOUT):
                await asyncio.gather(*workers)
        print(
            f"acknowledged per replica {successes} ({after_kill} after the kill),"
            f" unanswered {unanswered}; {len(acked_puts)} of {len(sent_puts)} puts acknowledged"
        )
        assert failures == [], "a surviving replica failed a call"
        assert all(after_kill[r] >= 40 for r in survivors)

        reader = creds[survivors[0]]
        stored_puts = await read_map(reader, "puts")
        missing = {k for k, v in acked_puts.items() if stored_puts.get(k) != v}
        assert not missing, f"acknowledged puts lost: {sorted(missing)[:5]}"
        assert stored_puts.items() <= sent_puts.items()
        for r in range(3):
            user = f"map{r}"
            got = await read_map(reader, user)
            assert set(got) == {f"m{j}" for j in range(MAP_SIZE)}, user
            generations = {int(v.rsplit("gen", 1)[1]) for v in got.values()}
            assert len(generations) == 1, f"{user}: a replace-all was half applied"
            assert acked_generation[user] <= generations.pop() <= sent_generation[user]
        contested = await read_map(reader, "contested")
        assert set(contested) == {f"m{j}" for j in range(MAP_SIZE)}
        tags = {v.removeprefix("sk-") for v in contested.values()}
        assert len(tags) == 1 and tags <= contested_tags, "a contested replace-all was half applied"

    assert duplicate_credential_rows(files) == []
    # A put is stored with its audit row or not at all, even when its replica died mid-write.
    put_audit = Counter(keys for user, keys, outcome in audit_rows(files, "credentials.put"))
    assert put_audit == Counter((key,) for key in stored_puts)


# --- 5. master-key rotation with three replicas running -----------------------------------------
