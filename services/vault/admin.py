"""`aicreds-admin`: the operator command — users' first tokens, key rotation, the audit log.

It opens the vault's database and keyring file directly (the same `STATE_DIR`,
`VAULT_DATABASE` and `VAULT_KEYRING_FILE` as the vault, read by the vault's own settings), so
it works with the vault stopped — e.g. to bootstrap the first token — and needs no network
right: whoever runs it already holds the key file. SQLite's WAL mode and busy timeout let it
write beside a running vault, which reloads the keyring file when it changes.

    aicreds-admin create-token --user USER [--name NAME] [--scopes a,b] [--expires-in 30d]
    aicreds-admin list-tokens --user USER [--json]
    aicreds-admin revoke-token ID
    aicreds-admin keys list
    aicreds-admin keys add
    aicreds-admin keys rewrap [--batch-size N] [--max-batches N] [--pause SECONDS]
    aicreds-admin keys retire ID
    aicreds-admin audit --user USER [--limit N] [--json]
    aicreds-admin bind-credential --user USER --key KEY (--host PATTERN ... | --clear)
    aicreds-admin copy-to-postgres SQLITE_FILE POSTGRES_URL

`copy-to-postgres` opens the two databases it names, not `VAULT_DATABASE`; it reads only the
keyring file, to verify the copy (`services.vault.store.copying`).

`create-token` prints only the token on stdout (details go to stderr). Exit status: 0 done,
1 refused or failed (the reason on stderr), 2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services.common.errors import AicredsError
from services.common.logging import configure_logging
from services.vault.auth import AuthDomain
from services.vault.config import VaultSettings
from services.vault.credential_hosts import CredentialHosts
from services.vault.envelope import Envelope
from services.vault.errors import StartupRefused
from services.vault.keyring import Keyring, KeyringSource, load_or_generate
from services.vault.resealing import reseal_rows, seal_legacy_rows
from services.vault.rotation import (
    DEFAULT_BATCH_SIZE,
    RewrapProgress,
    add_master_key,
    retire_master_key,
    rewrap_data_keys,
)
from services.vault.store.copying import CopyRefused
from services.vault.store.copying import copy_to_postgres as copy_vault
from services.vault.store.credential_hosts import SqlCredentialHostStore
from services.vault.store.database import Database
from services.vault.store.location import PostgresUrl, parse_location
from services.vault.store.rotation import SqlRotationStore
from services.vault.store.vault_tables import SqlVaultStore
from services.vault.tokens import TokenInfo, parse_lifetime

CALLER = "admin"


class CommandFailed(Exception):
    """The command was refused; the message is for the operator (never holds a secret)."""


@dataclass
class Vault:
    """The vault's state, opened directly."""

    settings: VaultSettings
    db: Database
    keyring: KeyringSource
    auth: AuthDomain
    rotation: SqlRotationStore
    credential_hosts: CredentialHosts


@asynccontextmanager
async def open_vault(settings: VaultSettings) -> AsyncIterator[Vault]:
    """Open the database and keyring the vault uses, and check they belong together."""
    keyring = KeyringSource(
        settings.keyring_file,
        load_or_generate(settings.keyring_file, generate_dev_key=settings.generate_dev_key),
    )
    db = await settings.open_database(readers=1)
    try:
        # The vault's own start-up check: refuses a keyring that lacks a key in use or holds a
        # wrong one, and records a check blob for a newly added key.
        envelope = Envelope(SqlVaultStore(db), keyring)
        await envelope.verify_master_keys()
        auth = AuthDomain.on(db, keyring)
        await seal_legacy_rows(auth.store, envelope)  # as the vault does at start
        yield Vault(
            settings,
            db,
            keyring,
            auth,
            SqlRotationStore(db),
            CredentialHosts(SqlCredentialHostStore(db), envelope),
        )
    finally:
        await db.close()


def _time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _token_json(info: TokenInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "user_id": info.user_id,
        "name": info.name,
        "prefix": info.prefix,
        "scopes": list(info.scopes),
        "created_at": _time(info.created_at),
        "last_used_at": _time(info.last_used_at) if info.last_used_at else None,
        "expires_at": _time(info.expires_at) if info.expires_at else None,
        "revoked_at": _time(info.revoked_at) if info.revoked_at else None,
    }


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _err(message: str) -> None:
    print(message, file=sys.stderr)


# -- commands ---------------------------------------------------------------------------------


async def create_token(vault: Vault, args: argparse.Namespace) -> None:
    try:
        lifetime = parse_lifetime(args.expires_in) if args.expires_in else 0
    except ValueError as err:
        raise CommandFailed(str(err)) from None
    # The command line is forgiving about spaces (`--scopes "a, b"`); the rule is exact.
    scopes = [s.strip() for s in (args.scopes or "").split(",") if s.strip()]
    created = await vault.auth.tokens.create(
        CALLER, args.user, name=args.name, scopes=scopes, expires_in_seconds=lifetime
    )
    info = created.info
    _err(
        f"created token {info.id} for user {info.user_id!r}; scopes: {', '.join(info.scopes)}; "
        f"expires: {_time(info.expires_at) if info.expires_at else 'never'}. "
        "It is shown only now: store it safely."
    )
    print(created.token)


async def list_tokens(vault: Vault, args: argparse.Namespace) -> None:
    tokens = await vault.auth.tokens.list(args.user)
    if args.json:
        print(json.dumps([_token_json(t) for t in tokens], indent=2))
        return
    if not tokens:
        _err(f"user {args.user!r} has no tokens")
        return
    rows = [["ID", "NAME", "PREFIX", "SCOPES", "CREATED", "LAST USED", "EXPIRES", "REVOKED"]]
    rows += [
        [
            t.id,
            t.name or "-",
            t.prefix,
            ",".join(t.scopes),
            _time(t.created_at),
            _time(t.last_used_at),
            _time(t.expires_at),
            _time(t.revoked_at),
        ]
        for t in tokens
    ]
    print(_table(rows))


async def revoke_token(vault: Vault, args: argparse.Namespace) -> None:
    user = await vault.auth.tokens.owner_of(args.token_id)
    info = await vault.auth.tokens.revoke(CALLER, user, args.token_id)
    print(f"revoked {info.id} (user {info.user_id!r}) and its sessions")


async def keys_list(vault: Vault, args: argparse.Namespace) -> None:
    counts = await vault.rotation.data_key_counts()
    keyring = vault.keyring.current
    rows = [["KEY", "PRIMARY", "DATA KEYS"]]
    rows += [
        [kid, "yes" if kid == keyring.primary_id else "", str(counts.get(kid, 0))]
        for kid in keyring.key_ids
    ]
    print(_table(rows))


async def keys_add(vault: Vault, args: argparse.Namespace) -> None:
    used = await vault.rotation.master_key_check_ids()
    updated = add_master_key(vault.settings.keyring_file, never_reuse=used)
    vault.keyring.reload()
    await Envelope(SqlVaultStore(vault.db), vault.keyring).verify_master_keys()
    _err(
        f"added master key {updated.primary_id}, now primary (keys: {updated.key_ids}). Back up "
        f"{vault.settings.keyring_file} to your secret store now, then run: keys rewrap"
    )
    print(updated.primary_id)


async def keys_rewrap(vault: Vault, args: argparse.Namespace) -> None:
    def progress(p: RewrapProgress) -> None:
        _err(f"batch {p.batches}: {p.rewrapped} data keys re-wrapped under {p.primary_id}")

    result = await rewrap_data_keys(
        vault.rotation,
        vault.keyring,
        batch_size=args.batch_size,
        max_batches=args.max_batches,
        pause=args.pause,
        on_batch=progress,
    )
    resealed = await reseal_rows(vault.auth.store, result.primary_id) if result.finished else 0
    counts = await vault.rotation.data_key_counts()
    left = {kid: n for kid, n in counts.items() if kid != result.primary_id}
    state = "done" if result.finished else "stopped early; run it again to finish"
    print(
        f"rewrap {state}: {result.rewrapped} data keys re-wrapped under {result.primary_id} "
        f"in {result.batches} batches; still under other keys: {left or 'none'}"
    )
    print(f"{resealed} token and session seals moved to {result.primary_id}")


async def keys_retire(vault: Vault, args: argparse.Namespace) -> None:
    updated = await retire_master_key(vault.settings.keyring_file, vault.rotation, args.key_id)
    _err(f"back up {vault.settings.keyring_file} to your secret store now")
    print(f"retired master key {args.key_id} (keys: {updated.key_ids})")


async def audit(vault: Vault, args: argparse.Namespace) -> None:
    events = await vault.auth.audit_log.list_events(args.user, limit=args.limit)
    if args.json:
        out = [
            {
                "id": e.id,
                "time": e.time.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "caller": e.caller,
                "user_id": e.user_id,
                "action": e.action,
                "keys": list(e.keys),
                "outcome": e.outcome,
            }
            for e in events
        ]
        print(json.dumps(out, indent=2))
        return
    rows = [["ID", "TIME", "CALLER", "ACTION", "KEYS", "OUTCOME"]]
    rows += [
        [
            str(e.id),
            e.time.strftime("%Y-%m-%dT%H:%M:%SZ"),
            e.caller,
            e.action,
            ",".join(e.keys) or "-",
            e.outcome,
        ]
        for e in events
    ]
    print(_table(rows))


async def bind_credential(vault: Vault, args: argparse.Namespace) -> None:
    if bool(args.host) == bool(args.clear):
        raise CommandFailed("give one or more --host patterns, or --clear to unbind")
    hosts = await vault.credential_hosts.set(CALLER, args.user, args.key, args.host or [])
    if hosts:
        _err(f"credential {args.key!r} of user {args.user!r} is bound to: {', '.join(hosts)}")
    else:
        _err(f"credential {args.key!r} of user {args.user!r} is unbound (any host)")


async def copy_to_postgres(settings: VaultSettings, args: argparse.Namespace) -> None:
    """Copy a SQLite vault into an empty PostgreSQL database, verified with the keyring file
    (never a generated one: the copy's data keys are wrapped by the vault's own keys)."""
    try:
        target = parse_location(args.postgres_url)
    except ValueError as err:
        raise CommandFailed(str(err).replace("VAULT_DATABASE", "POSTGRES_URL")) from None
    if not isinstance(target, PostgresUrl):
        raise CommandFailed("POSTGRES_URL must be a postgresql://... URL")
    keyring = KeyringSource(settings.keyring_file, Keyring.load(settings.keyring_file))
    try:
        report = await copy_vault(Path(args.sqlite_file), target, keyring)
    except CopyRefused as err:
        raise CommandFailed(str(err)) from None
    rows = [["TABLE", "SQLITE", "POSTGRESQL"]]
    rows += [[c.table, str(c.sqlite_rows), str(c.postgres_rows)] for c in report.tables]
    print(_table(rows))
    print(
        f"copied {sum(c.postgres_rows for c in report.tables)} rows (schema version"
        f" {report.schema_version}) to {target.redacted}; verified with the keyring:"
        f" {report.sampled_users} users sampled, {report.credentials_opened} credentials,"
        f" {report.providers_opened} providers and {report.token_seals_checked} token seals"
        " checked"
    )


# -- command line -----------------------------------------------------------------------------


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 60:
        raise argparse.ArgumentTypeError("must be between 0 and 60")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aicreds-admin",
        description="Operator command of the aicreds vault. Opens the vault's database and "
        "keyring file directly (STATE_DIR, VAULT_DATABASE, VAULT_KEYRING_FILE).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    create = commands.add_parser("create-token", help="issue an API token (printed once)")
    create.add_argument("--user", required=True, help="the user the token acts for")
    create.add_argument(
        "--name", default="aicreds-admin", help="a label, 1-128 characters (default: aicreds-admin)"
    )
    create.add_argument("--scopes", help="comma-separated scopes (default: all)")
    create.add_argument("--expires-in", help="lifetime, e.g. 90s, 12h, 30d, 2w (default: never)")
    create.set_defaults(run=create_token)

    listing = commands.add_parser("list-tokens", help="a user's tokens (never their secrets)")
    listing.add_argument("--user", required=True)
    listing.add_argument("--json", action="store_true", help="JSON instead of a table")
    listing.set_defaults(run=list_tokens)

    revoke = commands.add_parser("revoke-token", help="revoke a token and its sessions")
    revoke.add_argument("token_id", metavar="ID")
    revoke.set_defaults(run=revoke_token)

    keys = commands.add_parser("keys", help="master keys: list, add, rewrap, retire")
    key_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    key_commands.add_parser("list", help="keys, the primary, data keys each wraps").set_defaults(
        run=keys_list
    )
    key_commands.add_parser("add", help="add a new master key and make it primary").set_defaults(
        run=keys_add
    )
    rewrap = key_commands.add_parser("rewrap", help="re-wrap every data key under the primary")
    rewrap.add_argument("--batch-size", type=_positive, default=DEFAULT_BATCH_SIZE)
    rewrap.add_argument(
        "--max-batches", type=_positive, help="stop after N batches (run again to go on)"
    )
    rewrap.add_argument(
        "--pause", type=_seconds, default=0.0, help="seconds between batches (default 0)"
    )
    rewrap.set_defaults(run=keys_rewrap)
    retire = key_commands.add_parser("retire", help="remove a master key no data key uses")
    retire.add_argument("key_id", metavar="ID")
    retire.set_defaults(run=keys_retire)

    audit_log = commands.add_parser("audit", help="a user's audit log, newest first")
    audit_log.add_argument("--user", required=True)
    audit_log.add_argument("--limit", type=_positive, default=100, help="at most N (max 1000)")
    audit_log.add_argument("--json", action="store_true", help="JSON instead of a table")
    audit_log.set_defaults(run=audit)

    bind = commands.add_parser(
        "bind-credential",
        help="bind a credential to upstream hosts (SPEC 2.9), or --clear the binding",
    )
    bind.add_argument("--user", required=True)
    bind.add_argument("--key", required=True, help="the credential key (it must exist)")
    bind.add_argument(
        "--host",
        action="append",
        metavar="PATTERN",
        help="api.openai.com, '*.openai.azure.com', 127.0.0.1:8080, '[::1]:8443' (repeatable)",
    )
    bind.add_argument("--clear", action="store_true", help="unbind: any host may receive it")
    bind.set_defaults(run=bind_credential)

    copy = commands.add_parser(
        "copy-to-postgres",
        help="copy a SQLite vault into an empty PostgreSQL database, verified with the keyring",
    )
    copy.add_argument("sqlite_file", metavar="SQLITE_FILE", help="the vault's SQLite file")
    copy.add_argument(
        "postgres_url",
        metavar="POSTGRES_URL",
        help="postgresql://USER@HOST:PORT/DB (the password may come from PGPASSWORD)",
    )
    copy.set_defaults(run=None)
    return parser


async def run(settings: VaultSettings, args: argparse.Namespace) -> None:
    if args.command == "copy-to-postgres":  # opens the databases it names, not the vault's
        await copy_to_postgres(settings, args)
        return
    async with open_vault(settings) as vault:
        await args.run(vault, args)


def main(argv: Sequence[str] | None = None) -> None:
    """`aicreds-admin`: parse, run one command, exit 0 / 1 (refused) / 2 (usage)."""
    args = build_parser().parse_args(argv)
    try:
        settings = VaultSettings.from_env(os.environ)
    except ValueError as err:
        sys.exit(f"aicreds-admin: {err}")
    configure_logging("vault-admin", "WARNING")
    try:
        asyncio.run(run(settings, args))
    except (AicredsError, StartupRefused, CommandFailed) as err:
        message = err.message if isinstance(err, AicredsError) else str(err)
        sys.exit(f"aicreds-admin: {message}")
    except OSError as err:
        # e.g. a keyring file on a read-only mount; the text names a path, never a secret.
        sys.exit(f"aicreds-admin: {err.strerror or type(err).__name__}: {err.filename or ''}")
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
