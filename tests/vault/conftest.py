"""Every vault test runs on both backends, SQLite and PostgreSQL, unless it is marked:

- `no_store`: touches no database (keys, parsing): run once;
- `sqlite_only(reason)`: about SQLite itself (its file, pragmas, threads): run on SQLite only.

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
    one = metafunc.definition.get_closest_marker(
        "no_store"
    ) or metafunc.definition.get_closest_marker("sqlite_only")
    metafunc.parametrize("vault_backend", ["sqlite"] if one else list(BACKENDS), indirect=True)


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
