"""Tokens, sessions and the audit log, wired to the vault's database and token pepper.

Used by the vault process and by the operator command (`aicreds-admin`), which opens the same
database and keyring file directly.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.vault.audit_log import AuditLog
from services.vault.keyring import KeyringSource
from services.vault.row_seals import RowSealer
from services.vault.sessions import SessionService
from services.vault.store.audit_log import SqlAuditReader
from services.vault.store.database import Database
from services.vault.store.tokens import SqlAuthStore
from services.vault.tokens import SecretHasher, TokenService


@dataclass(frozen=True)
class AuthDomain:
    """The domain objects behind AuthService and AuditService."""

    store: SqlAuthStore
    tokens: TokenService
    sessions: SessionService
    audit_log: AuditLog

    @classmethod
    def on(cls, db: Database, keyring: KeyringSource) -> AuthDomain:
        """On the database, with the keyring's pepper (digests) and master keys (row seals)."""
        store = SqlAuthStore(db, RowSealer(keyring))
        hasher = SecretHasher(keyring.current.pepper)
        return cls(
            store=store,
            tokens=TokenService(store, hasher),
            sessions=SessionService(store, store, hasher),
            audit_log=AuditLog(SqlAuditReader(db)),
        )
