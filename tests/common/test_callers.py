"""Caller files and caller-token matching."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.common.callers import (
    CallerRegistry,
    Right,
    hash_caller_token,
    read_secret_file,
    write_callers_file,
)


def test_written_callers_file_is_private_and_authenticates(tmp_path: Path) -> None:
    path = tmp_path / "callers.json"
    write_callers_file(path, {"gateway": ("tok-1", ["manage"]), "router": ("tok-2", ["resolve"])})
    assert path.stat().st_mode & 0o777 == 0o600
    assert "tok-1" not in path.read_text()
    registry = CallerRegistry.load(path)
    gateway = registry.authenticate("tok-1")
    assert gateway is not None and gateway.name == "gateway" and gateway.has(Right.MANAGE)
    assert not gateway.has(Right.RESOLVE)
    assert registry.authenticate("tok-3") is None
    assert "tok" not in repr(registry) and "tok" not in repr(gateway)


def test_callers_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "callers.json"
    write_callers_file(path, {"gateway": ("tok-1", ["manage"])})
    path.chmod(0o644)
    with pytest.raises(ValueError, match="chmod 600"):
        CallerRegistry.load(path)


@pytest.mark.parametrize(
    "entries, problem",
    [
        ([{"token_sha256": "00" * 32, "rights": []}], "no name"),
        ([{"name": "a", "rights": []}], "no token_sha256"),
        ([{"name": "a", "token_sha256": "zz", "rights": []}], "not hex"),
        ([{"name": "a", "token_sha256": "00" * 8, "rights": []}], "not SHA-256"),
        ([{"name": "a", "token_sha256": "00" * 32, "rights": ["root"]}], "unknown right"),
        (
            [
                {"name": "a", "token_sha256": "00" * 32, "rights": []},
                {"name": "a", "token_sha256": "11" * 32, "rights": []},
            ],
            "unique",
        ),
    ],
)
def test_malformed_entries_are_refused_with_the_reason(
    entries: list[dict[str, object]], problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        CallerRegistry.from_entries(entries)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        CallerRegistry.load(tmp_path / "absent.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"nope": []}))
    bad.chmod(0o600)
    with pytest.raises(ValueError, match="callers"):
        CallerRegistry.load(bad)
    with pytest.raises(ValueError, match="does not exist"):
        read_secret_file(tmp_path / "absent.token")


def test_hash_is_sha256_hex() -> None:
    assert hash_caller_token("abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
