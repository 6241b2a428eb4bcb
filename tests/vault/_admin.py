"""Running `aicreds-admin` as a subprocess against a test vault's state."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from services.vault.store.location import DatabaseLocation
from tests.support.databases import raw_fetch
from tests.support.vault import VaultFiles

REPO = Path(__file__).resolve().parents[2]


def admin_command() -> list[str]:
    """The installed console script (as operators run it), else the module."""
    script = Path(sys.executable).with_name("aicreds-admin")
    return [str(script)] if script.exists() else [sys.executable, "-m", "services.vault.admin"]


def admin_env(files: VaultFiles) -> dict[str, str]:
    """The environment of the command: this checkout first on its path, since the installed
    script's package may point at another checkout of the project."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
    env.update(files.env())
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


@dataclass(frozen=True)
class AdminResult:
    returncode: int
    stdout: str
    stderr: str


async def start_admin(files: VaultFiles, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *admin_command(),
        *args,
        cwd=REPO,
        env=admin_env(files),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def run_admin(files: VaultFiles, *args: str, ok: bool | None = True) -> AdminResult:
    """Run one command; with `ok`, assert it succeeded (True) or was refused (False)."""
    process = await start_admin(files, *args)
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    result = AdminResult(process.returncode or 0, out.decode(), err.decode())
    if ok is True:
        assert result.returncode == 0, result
    elif ok is False:
        assert result.returncode == 1, result
    return result


def master_keys_of_data_keys(database: DatabaseLocation) -> dict[str, str]:
    """user id -> id of the master key wrapping that user's data key."""
    return {str(u): str(k) for u, k in raw_fetch(database, "SELECT user_id, kek_id FROM data_keys")}
