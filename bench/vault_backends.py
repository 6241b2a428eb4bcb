"""The vault on PostgreSQL for `vault_resolve`: a fresh database per run, and its CPU.

With `BENCH_VAULT_POSTGRES` set to a server URL, the bench creates a database named
`aicreds_bench_<random>` on that server for each replica count, points a whole stack's vault at
it (`VAULT_DATABASE`), starts the extra vault replicas on the same database, prepares the user
through REST exactly as for SQLite, measures `Resolve`, then stops the stack and drops the
database (`WITH (FORCE)`, so a crashed replica's connections cannot keep it alive).

PostgreSQL's own CPU is that of the server backends connected to this database (their pids from
`pg_stat_activity`, read from /proc): the vault pools' connections. The server's shared
processes (WAL writer, checkpointer) serve every database on the server, so they are left out.
Transactions committed and rows inserted come from `pg_stat_database` for this database alone.
They are approximate: a busy backend reports its counters at most once a second, and the rest
only after 10 s idle (PostgreSQL 15), so up to about a second of calls at each end of a run is
counted in the neighbouring period; the two ends largely cancel out.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from types import TracebackType
from urllib.parse import urlsplit, urlunsplit

from bench import procstats


def database_url(server_url: str, database: str) -> str:
    """`server_url` naming `database` instead of its own (user, host, port, query kept)."""
    parts = urlsplit(server_url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


def redacted(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username or ''}:***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class PostgresError(RuntimeError):
    """The bench's database could not be created or dropped; the message says why."""


@dataclass
class BenchDatabase:
    """One fresh database on the server, for one stack; `async with` creates then drops it."""

    server_url: str = field(repr=False)
    name: str = field(default_factory=lambda: "aicreds_bench_" + secrets.token_hex(6))

    @property
    def url(self) -> str:
        return database_url(self.server_url, self.name)

    async def _admin(self, sql: str) -> None:
        import asyncpg

        try:
            conn = await asyncpg.connect(self.server_url, timeout=10)
        except (OSError, asyncpg.PostgresError) as err:
            raise PostgresError(
                f"cannot connect to {redacted(self.server_url)}: {type(err).__name__}: {err}"
            ) from None
        try:
            await conn.execute(sql)
        except asyncpg.PostgresError as err:
            raise PostgresError(f"{sql}: {type(err).__name__}: {err}") from None
        finally:
            await conn.close()

    async def __aenter__(self) -> BenchDatabase:
        # The name is ours (letters, digits, underscore): safe to put in the statement.
        await self._admin(f'CREATE DATABASE "{self.name}"')
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    async def probe(self) -> dict[str, float]:
        """Counters so far: `cpu_s` of this database's backends (user + system), and
        `xact_commit`, `tup_inserted` from `pg_stat_database`. Subtract two probes."""
        import asyncpg

        conn = await asyncpg.connect(self.server_url, timeout=10)
        try:
            rows = await conn.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                self.name,
            )
            cpu = procstats.cpu_seconds_of([int(row["pid"]) for row in rows])
            stats = await conn.fetchrow(
                "SELECT xact_commit, tup_inserted FROM pg_stat_database WHERE datname = $1",
                self.name,
            )
        finally:
            await conn.close()
        return {
            "cpu_s": cpu,
            "xact_commit": float(stats["xact_commit"]) if stats else 0.0,
            "tup_inserted": float(stats["tup_inserted"]) if stats else 0.0,
        }
