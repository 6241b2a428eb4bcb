"""Versioned schema migrations of the SQLite backend, applied in order at start.

Append new migrations at the end with the next version number; never edit or reorder one that
has shipped. Each runs in one transaction together with its row in `schema_migrations`, so a
crash leaves either all of it or none.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "credential store: data keys, credentials, master key checks, audit events",
        (
            """CREATE TABLE data_keys (
                user_id    TEXT PRIMARY KEY,
                dek_id     TEXT NOT NULL,
                kek_id     TEXT NOT NULL,
                wrapped    BLOB NOT NULL,
                created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL
            )""",
            "CREATE INDEX data_keys_by_kek ON data_keys (kek_id)",
            """CREATE TABLE credentials (
                user_id    TEXT NOT NULL,
                key        TEXT NOT NULL,
                blob       BLOB NOT NULL,
                updated_at TEXT NOT NULL,
                UNIQUE (user_id, key)
            )""",
            """CREATE TABLE master_key_checks (
                kek_id     TEXT PRIMARY KEY,
                blob       BLOB NOT NULL,
                created_at TEXT NOT NULL
            )""",
            """CREATE TABLE audit_events (
                id      INTEGER PRIMARY KEY AUTOINCREMENT,
                time    TEXT NOT NULL,
                caller  TEXT NOT NULL,
                user_id TEXT NOT NULL,
                action  TEXT NOT NULL,
                keys    TEXT NOT NULL,
                outcome TEXT NOT NULL
            )""",
            "CREATE INDEX audit_events_by_user ON audit_events (user_id, id)",
        ),
    ),
    Migration(
        2,
        "API tokens and sessions (HMAC digests only; services.vault.store.tokens)",
        (
            """CREATE TABLE api_tokens (
                id           TEXT PRIMARY KEY,
                user_id      TEXT NOT NULL,
                name         TEXT NOT NULL,
                prefix       TEXT NOT NULL,
                digest       BLOB NOT NULL UNIQUE,
                scopes       TEXT NOT NULL,
                created_at   TEXT NOT NULL,
                last_used_at TEXT,
                expires_at   TEXT,
                revoked_at   TEXT
            )""",
            "CREATE INDEX api_tokens_by_user ON api_tokens (user_id, created_at)",
            """CREATE TABLE sessions (
                id         TEXT PRIMARY KEY,
                user_id    TEXT NOT NULL,
                token_id   TEXT NOT NULL REFERENCES api_tokens (id),
                digest     BLOB NOT NULL UNIQUE,
                created_at TEXT NOT NULL,
                expires_at TEXT NOT NULL,
                revoked_at TEXT
            )""",
            "CREATE INDEX sessions_by_token ON sessions (token_id)",
            "CREATE INDEX sessions_by_expiry ON sessions (expires_at)",
        ),
    ),
    Migration(
        3,
        "providers: plain configuration, headers sealed under the user's data key",
        (
            """CREATE TABLE providers (
                user_id               TEXT NOT NULL,
                name                  TEXT NOT NULL,
                kind                  TEXT NOT NULL,
                base_url              TEXT NOT NULL,
                models                TEXT NOT NULL,
                on_missing_credential TEXT NOT NULL,
                headers               BLOB NOT NULL,
                created_at            TEXT NOT NULL,
                updated_at            TEXT NOT NULL,
                PRIMARY KEY (user_id, name)
            )""",
        ),
    ),
    Migration(
        4,
        "provider_models: model -> provider index, so Resolve by model reads one provider",
        (
            """CREATE TABLE provider_models (
                user_id  TEXT NOT NULL,
                model    TEXT NOT NULL,
                provider TEXT NOT NULL,
                PRIMARY KEY (user_id, model, provider),
                FOREIGN KEY (user_id, provider) REFERENCES providers (user_id, name)
                    ON DELETE CASCADE ON UPDATE CASCADE
            ) WITHOUT ROWID""",
            "CREATE INDEX provider_models_by_provider ON provider_models (user_id, provider)",
            "INSERT OR IGNORE INTO provider_models (user_id, model, provider)"
            " SELECT p.user_id, m.value, p.name FROM providers p, json_each(p.models) m",
        ),
    ),
    Migration(
        5,
        "token parents: who minted a token, so that revoking the parent revokes it",
        (
            "ALTER TABLE api_tokens ADD COLUMN parent_token_id TEXT",
            "ALTER TABLE api_tokens ADD COLUMN parent_session_id TEXT",
            "CREATE INDEX api_tokens_by_parent_token ON api_tokens (parent_token_id)"
            " WHERE parent_token_id IS NOT NULL",
            "CREATE INDEX api_tokens_by_parent_session ON api_tokens (parent_session_id)"
            " WHERE parent_session_id IS NOT NULL",
        ),
    ),
    Migration(
        6,
        "integrity: seals on token and session rows, provider configuration in the headers'"
        " AAD (both completed at start with the keyring), append-only audit_events",
        (
            "ALTER TABLE api_tokens ADD COLUMN seal_kek TEXT",
            "ALTER TABLE api_tokens ADD COLUMN seal BLOB",
            "ALTER TABLE sessions ADD COLUMN seal_kek TEXT",
            "ALTER TABLE sessions ADD COLUMN seal BLOB",
            # What the first start with the keyring must seal in place (services.vault.resealing):
            # rows written before this migration. Outside it, an unsealed row is refused.
            """CREATE TABLE row_seal_pending (
                kind       TEXT PRIMARY KEY,
                created_at TEXT NOT NULL
            )""",
            "INSERT INTO row_seal_pending (kind, created_at) VALUES"
            " ('api_token', strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),"
            " ('session', strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),"
            " ('provider', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
            "CREATE INDEX api_tokens_by_seal_kek ON api_tokens (seal_kek)",
            "CREATE INDEX sessions_by_seal_kek ON sessions (seal_kek)",
            # The audit log is append-only, whatever code runs against the database.
            """CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
            BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END""",
            """CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
            BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END""",
        ),
    ),
    Migration(
        7,
        "credential host binding: each value's bound hosts (canonical JSON, sealed in its AAD)",
        ("ALTER TABLE credentials ADD COLUMN hosts TEXT NOT NULL DEFAULT '[]'",),
    ),
    Migration(
        8,
        "token usage: each user's input and output tokens per day, provider and model",
        (
            """CREATE TABLE usage_daily (
                user_id       TEXT NOT NULL,
                day           TEXT NOT NULL,
                provider      TEXT NOT NULL,
                model         TEXT NOT NULL,
                input_tokens  INTEGER NOT NULL,
                output_tokens INTEGER NOT NULL,
                calls         INTEGER NOT NULL,
                PRIMARY KEY (user_id, day, provider, model)
            ) WITHOUT ROWID""",
        ),
    ),
)
