"""`aicreds-admin bind-credential`: the operator binds a credential to hosts, or clears it,
through the vault's own domain code, beside a running vault."""

from __future__ import annotations

from pathlib import Path

from aicreds.vault.v1 import credentials_pb2 as pb
from aicreds.vault.v1.credentials_pb2_grpc import CredentialServiceStub

from tests.support.vault import running_vault
from tests.vault._admin import run_admin

SECRET = "sk-admin-bound-secret-0123456789"


async def test_bind_and_clear(tmp_path: Path) -> None:
    async with running_vault(tmp_path) as vault:
        stub = CredentialServiceStub(vault.channel("gateway"))
        await stub.PutCredential(pb.PutCredentialRequest(user_id="alice", key="k", value=SECRET))

        done = await run_admin(
            vault.files,
            "bind-credential",
            "--user",
            "alice",
            "--key",
            "k",
            "--host",
            "API.openai.com",
            "--host",
            "*.openai.azure.com",
        )
        assert "*.openai.azure.com, api.openai.com" in done.stderr
        assert SECRET not in done.stdout + done.stderr
        hosts = await stub.GetCredentialHosts(pb.GetCredentialHostsRequest(user_id="alice"))
        assert list(hosts.hosts["k"].hosts) == ["*.openai.azure.com", "api.openai.com"]
        # The running vault opens the value sealed by the command.
        resolver = CredentialServiceStub(vault.channel("router"))
        resolved = await resolver.Resolve(
            pb.ResolveRequest(user_id="alice", keys=pb.KeyNames(keys=["k"]))
        )
        assert dict(resolved.values) == {"k": SECRET}
        assert list(resolved.value_hosts["k"].hosts) == ["*.openai.azure.com", "api.openai.com"]

        await run_admin(vault.files, "bind-credential", "--user", "alice", "--key", "k", "--clear")
        hosts = await stub.GetCredentialHosts(pb.GetCredentialHostsRequest(user_id="alice"))
        assert dict(hosts.hosts) == {}

        refused = await run_admin(
            vault.files, "bind-credential", "--user", "alice", "--key", "nope", "--clear", ok=False
        )
        assert "not found" in refused.stderr
        bad = await run_admin(
            vault.files,
            "bind-credential",
            *("--user", "alice", "--key", "k", "--host", "http://x.example"),
            ok=False,
        )
        assert "http://x.example" in bad.stderr
        neither = await run_admin(
            vault.files, "bind-credential", "--user", "alice", "--key", "k", ok=False
        )
        assert "--clear" in neither.stderr
