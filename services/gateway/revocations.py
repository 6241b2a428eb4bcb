"""Revocations: what a revoked token or an ended session drops from the authentication caches,
on this replica at once and, through a feed (`revocation_feed.py`), on every other replica.

`Revocations` is the one home of the rule. The REST handlers call it after the vault has
confirmed: `token_revoked(user_id)` drops every cached answer of the user (the vault revoked the
token's descendants too, which this replica cannot name), `session_ended(user_id, session)` the
session's answer and the user's (the tokens minted through the session). Then it publishes the
same `Revocation` for the other replicas, which apply it to their own `Authenticator`.

A published revocation names what to drop, never a secret: a user id and, for a session, the
SHA-256 cache key the `Authenticator` files it under. On the wire it is one JSON object:

    {"v": 1, "user_id": "alice"}                         a token revoked
    {"v": 1, "user_id": "alice", "session_key": "9f…"}   a session ended (64 lowercase hex)

Anything else received is malformed and ignored (`decode_revocation` says why).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from services.gateway.auth import Authenticator, session_cache_key

MAX_MESSAGE_BYTES = 1024
_VERSION = 1
_USER_ID = re.compile(r"[!-~]{1,256}")  # the vault's rule for user ids
_CACHE_KEY = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Revocation:
    """What every replica drops: each cached answer of `user_id`'s tokens and sessions, and the
    one filed under `session_key` (a `PresentedCredential.cache_key`), if any."""

    user_id: str
    session_key: str | None = None

    def encode(self) -> bytes:
        message: dict[str, object] = {"v": _VERSION, "user_id": self.user_id}
        if self.session_key is not None:
            message["session_key"] = self.session_key
        return json.dumps(message, separators=(",", ":")).encode()

    def apply_to(self, authenticator: Authenticator) -> None:
        if self.session_key is not None:
            authenticator.forget_cache_key(self.session_key)
        authenticator.forget_user(self.user_id)


class MalformedRevocation(StrEnum):
    """Why a received message is not a `Revocation` (a metric label and a log field)."""

    TOO_LARGE = "too_large"
    NOT_JSON = "not_json"
    NOT_AN_OBJECT = "not_an_object"
    UNKNOWN_VERSION = "unknown_version"
    BAD_USER_ID = "bad_user_id"
    BAD_SESSION_KEY = "bad_session_key"
    UNKNOWN_FIELD = "unknown_field"


def decode_revocation(data: bytes) -> Revocation | MalformedRevocation:
    """The revocation `data` carries, or why it carries none."""
    if len(data) > MAX_MESSAGE_BYTES:
        return MalformedRevocation.TOO_LARGE
    try:
        message = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return MalformedRevocation.NOT_JSON
    if not isinstance(message, dict):
        return MalformedRevocation.NOT_AN_OBJECT
    if message.get("v") != _VERSION or isinstance(message.get("v"), bool):
        return MalformedRevocation.UNKNOWN_VERSION
    if not set(message) <= {"v", "user_id", "session_key"}:
        return MalformedRevocation.UNKNOWN_FIELD
    user_id = message.get("user_id")
    if not isinstance(user_id, str) or not _USER_ID.fullmatch(user_id):
        return MalformedRevocation.BAD_USER_ID
    session_key = message.get("session_key")
    if session_key is not None and (
        not isinstance(session_key, str) or not _CACHE_KEY.fullmatch(session_key)
    ):
        return MalformedRevocation.BAD_SESSION_KEY
    return Revocation(user_id, session_key)


class RevocationPublisher(Protocol):
    async def publish(self, revocation: Revocation) -> None:
        """Tell the other replicas; never raises (a failure is logged and counted: the vault
        has revoked already, and the other replicas catch up within their cache TTL)."""


class Revocations:
    """Drops revoked credentials from this replica's cache and tells the others (through
    `publisher`, None without a feed)."""

    def __init__(
        self, authenticator: Authenticator, publisher: RevocationPublisher | None = None
    ) -> None:
        self._authenticator = authenticator
        self._publisher = publisher

    async def token_revoked(self, user_id: str) -> None:
        """After the vault revoked one of `user_id`'s tokens (and so its descendants)."""
        await self._revoke(Revocation(user_id))

    async def session_ended(self, user_id: str, session: str) -> None:
        """After the vault ended `session` (and so the tokens minted through it)."""
        await self._revoke(Revocation(user_id, session_cache_key(session)))

    async def _revoke(self, revocation: Revocation) -> None:
        revocation.apply_to(self._authenticator)
        if self._publisher is not None:
            await self._publisher.publish(revocation)
