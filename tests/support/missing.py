"""What a test does when something it needs from the machine is missing: a PostgreSQL or Redis
server, `redis-server`, Debian's chromium. Locally it is skipped, with the reason (`make test`'s
`-ra` prints it); under CI (`CI=true`) it fails, because CI must never skip these tests."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def under_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def skip_or_fail(tests: str, reason: str, hint: str = "") -> NoReturn:
    """Skip the calling test (fail it under CI): `tests` names them ("PostgreSQL tests"),
    `reason` says what is missing, `hint` how to provide it."""
    if under_ci():
        pytest.fail(f"CI must run the {tests}: {reason}", pytrace=False)
    pytest.skip(f"{tests} skipped: {reason}" + (f" ({hint})" if hint else ""))
