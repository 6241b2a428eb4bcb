"""Service callers (SPEC 4.2): who may call a gRPC service, and with which rights.

A server knows its callers from a JSON file holding only SHA-256 digests of their tokens:

    {"callers": [{"name": "gateway", "token_sha256": "<hex>", "rights": ["manage"]}]}

A caller presents its token as metadata `authorization: Bearer <token>`. Every digest is
compared in constant time, so the time taken does not tell which caller nearly matched.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any


class Right(StrEnum):
    """What a caller may do. Vault: manage, resolve, admin. Router: invoke."""

    MANAGE = "manage"
    RESOLVE = "resolve"
    ADMIN = "admin"
    INVOKE = "invoke"


@dataclass(frozen=True)
class Caller:
    """An authenticated service caller."""

    name: str
    rights: frozenset[Right]
    token_sha256: bytes = field(repr=False, compare=False, default=b"")

    def has(self, right: Right) -> bool:
        return right in self.rights


def hash_caller_token(token: str) -> str:
    """Hex SHA-256 of a caller token, as stored in a callers file."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_caller_token() -> str:
    """A fresh random caller token (256 bits, URL-safe)."""
    return "svc-" + secrets.token_urlsafe(32)


class CallerRegistry:
    """The callers a server accepts."""

    def __init__(self, callers: Iterable[Caller]) -> None:
        self._callers = tuple(callers)
        names = [c.name for c in self._callers]
        if len(set(names)) != len(names):
            raise ValueError("callers file: caller names must be unique")

    def __repr__(self) -> str:
        return f"CallerRegistry(names={[c.name for c in self._callers]!r})"

    @property
    def names(self) -> list[str]:
        return [c.name for c in self._callers]

    @classmethod
    def from_entries(cls, entries: Iterable[Mapping[str, Any]]) -> CallerRegistry:
        """Build from dicts shaped like the file's entries.

        An entry may carry `token` (plaintext, for tests) instead of `token_sha256`.
        """
        callers = []
        for i, entry in enumerate(entries):
            name = entry.get("name")
            if not isinstance(name, str) or not name:
                raise ValueError(f"callers file: entry {i} has no name")
            digest_hex = entry.get("token_sha256")
            if digest_hex is None and isinstance(entry.get("token"), str):
                digest_hex = hash_caller_token(entry["token"])
            if not isinstance(digest_hex, str):
                raise ValueError(f"callers file: caller {name!r} has no token_sha256")
            try:
                digest = bytes.fromhex(digest_hex)
            except ValueError:
                raise ValueError(f"callers file: caller {name!r} token_sha256 is not hex") from None
            if len(digest) != 32:
                raise ValueError(f"callers file: caller {name!r} token_sha256 is not SHA-256")
            raw_rights = entry.get("rights", [])
            try:
                rights = frozenset(Right(r) for r in raw_rights)
            except ValueError:
                raise ValueError(f"callers file: caller {name!r} has an unknown right") from None
            callers.append(Caller(name=name, rights=rights, token_sha256=digest))
        return cls(callers)

    @classmethod
    def load(cls, path: Path) -> CallerRegistry:
        """Read a callers file; refuse one that others may read or that is malformed."""
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            raise ValueError(f"callers file {path} does not exist") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ValueError(f"callers file {path} is readable by others; run: chmod 600 {path}")
        try:
            data = json.loads(path.read_text("utf-8"))
        except (OSError, json.JSONDecodeError):
            raise ValueError(f"callers file {path} is not valid JSON") from None
        if not isinstance(data, dict) or not isinstance(data.get("callers"), list):
            raise ValueError(f'callers file {path} must hold {{"callers": [...]}}')
        return cls.from_entries(data["callers"])

    def authenticate(self, token: str) -> Caller | None:
        """The caller whose token this is, or None. Constant time over all callers."""
        presented = hashlib.sha256(token.encode("utf-8")).digest()
        found: Caller | None = None
        for caller in self._callers:
            if hmac.compare_digest(presented, caller.token_sha256):
                found = caller
        return found


def write_callers_file(path: Path, callers: Mapping[str, tuple[str, Iterable[str]]]) -> None:
    """Write a callers file (mode 0600) from name -> (plaintext token, rights)."""
    entries = [
        {"name": name, "token_sha256": hash_caller_token(token), "rights": sorted(rights)}
        for name, (token, rights) in callers.items()
    ]
    write_private_file(path, json.dumps({"callers": entries}, indent=2) + "\n")


def write_private_file(path: Path, text: str) -> None:
    """Create or replace a file readable only by its owner (0600), atomically and durably.

    The text goes to a fresh file of unique name in the same directory (created with
    O_EXCL | O_NOFOLLOW, so neither a file nor a symlink planted in advance is followed), which
    is fsynced, renamed over `path`, and the directory fsynced, so that after a crash the file
    is either the old one or the new one, and the new one survives once this returns. A missing
    directory is created owner-only (0700).
    """
    directory = path.parent
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    while True:
        tmp = directory / f".{path.name}.{secrets.token_hex(8)}.tmp"
        try:
            fd = os.open(tmp, flags, 0o600)
            break
        except FileExistsError:
            continue
    try:
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            data = memoryview(text.encode("utf-8"))
            while data:
                data = data[os.write(fd, data) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def refuse_shared_file(path: Path, what: str) -> None:
    """Raise ValueError if group or others may read or write `path` (a secret, a database),
    naming the file and its mode; nothing if it does not exist."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ValueError(
            f"{what} {path} has mode {stat.S_IMODE(mode):04o}: group or others may read or "
            f"write it; run: chmod 600 {path}"
        )


def read_secret_file(path: Path) -> str:
    """A secret (e.g. a caller token) from a file, whitespace stripped; clear error if absent or
    if group or others may read it (as for the keyring and callers files)."""
    refuse_shared_file(path, "secret file")
    try:
        value = path.read_text("utf-8").strip()
    except FileNotFoundError:
        raise ValueError(f"secret file {path} does not exist") from None
    if not value:
        raise ValueError(f"secret file {path} is empty")
    return value
