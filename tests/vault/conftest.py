"""Every vault test runs on both backends, SQLite and PostgreSQL, unless it is marked:

- `no_store`: touches no database (keys, parsing): run once;
- `sqlite_only(reason)`: about SQLite itself (its file, pragmas, threads): run on SQLite only;
- `postgres_only(reason)`: about PostgreSQL itself (replicas on one database, pg_dump): run on
  PostgreSQL only.

The PostgreSQL runs need a server (`tests/support/postgres.py`): without one they are skipped
with the reason, except under CI, where they fail.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.postgres import require_postgres
from tests.support.vault import drop_test_databases, use_backend

BACKENDS = ("sqlite", "postgresql")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "vault_backend" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker
    if marker("postgres_only"):
        backends = ["postgresql"]
    elif marker("no_store") or marker("sqlite_only"):
        backends = ["sqlite"]
    else:
        backends = list(BACKENDS)
    metafunc.parametrize("vault_backend", backends, indirect=True)


@pytest.fixture(autouse=True)
def vault_backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """The backend of the vaults this test starts (`tests.support.vault`)."""
    backend: str = request.param
    if backend == "postgresql":
        require_postgres()
    use_backend(backend)
    try:
        yield backend
    finally:
        use_backend("sqlite")
        drop_test_databases()
