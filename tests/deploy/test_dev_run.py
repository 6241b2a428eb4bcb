"""`make run`'s configuration (devtools.run) and state, without starting anything."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from devtools.run import GRANTS, build_config, connect_address, prepare_state
from services.common.callers import CallerRegistry, Right
from tests.deploy.service_env import SERVICES, variables_read


def test_addresses_are_wired_into_each_other_and_other_settings_pass_through(
    tmp_path: Path,
) -> None:
    config = build_config(
        {
            "STATE_DIR": str(tmp_path / "s"),
            "VAULT_LISTEN": "0.0.0.0:6001",
            "ROUTER_LISTEN": "127.0.0.1:6002",
            "GATEWAY_LISTEN": "127.0.0.1:0",
            "ROUTER_EGRESS_ALLOW": "127.0.0.1",
            "GATEWAY_COOKIE_SECURE": "true",
            "ROUTER_VAULT_ADDR": "elsewhere:1",
        }
    )
    env = config.env
    assert env["STATE_DIR"] == str((tmp_path / "s").resolve())
    assert env["ROUTER_VAULT_ADDR"] == env["GATEWAY_VAULT_ADDR"] == "127.0.0.1:6001"
    assert env["GATEWAY_ROUTER_ADDR"] == "127.0.0.1:6002"
    port = int(env["GATEWAY_LISTEN"].rpartition(":")[2])
    assert port > 0, "port 0 becomes a concrete free port, so clients can be told where it is"
    assert config.gateway_url == f"http://127.0.0.1:{port}"
    assert env["GATEWAY_ORIGIN"] == config.gateway_url
    assert env["ROUTER_EGRESS_ALLOW"] == "127.0.0.1"
    assert env["GATEWAY_COOKIE_SECURE"] == "true", "an explicit setting wins"
    assert env["VAULT_GENERATE_DEV_KEY"] == "true"


def test_defaults_are_the_documented_localhost_ports() -> None:
    config = build_config({})
    assert config.listen == {
        "vault": "127.0.0.1:50051",
        "router": "127.0.0.1:50052",
        "gateway": "127.0.0.1:8080",
    }
    assert config.env["GATEWAY_COOKIE_SECURE"] == "false"
    assert config.state_dir == Path(".state").resolve()


@pytest.mark.parametrize(
    ("listen", "connect"),
    [("0.0.0.0:1", "127.0.0.1:1"), ("[::]:2", "[::1]:2"), ("10.0.0.5:3", "10.0.0.5:3")],
)
def test_connect_address(listen: str, connect: str) -> None:
    assert connect_address(listen) == connect


def test_state_is_private_and_tokens_survive_a_restart(tmp_path: Path) -> None:
    config = build_config({"STATE_DIR": str(tmp_path / "state")})
    prepare_state(config)
    tokens = {g.token_file: (config.state_dir / g.token_file).read_text() for g in GRANTS}
    prepare_state(build_config({"STATE_DIR": str(tmp_path / "state")}))
    assert tokens == {g.token_file: (config.state_dir / g.token_file).read_text() for g in GRANTS}
    for path in config.state_dir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    assert stat.S_IMODE(config.state_dir.stat().st_mode) == 0o700
    vault = CallerRegistry.load(config.state_dir / "vault-callers.json")
    router = CallerRegistry.load(config.state_dir / "router-callers.json")
    expected = {
        "gateway-vault.token": (vault, "gateway", Right.MANAGE),
        "router-vault.token": (vault, "router", Right.RESOLVE),
        "gateway-router.token": (router, "gateway", Right.INVOKE),
        "agent-router.token": (router, "agent", Right.INVOKE),
    }
    for file, (registry, name, right) in expected.items():
        caller = registry.authenticate(tokens[file].strip())
        assert caller is not None and caller.name == name and caller.rights == {right}


def test_token_and_callers_files_follow_the_services_settings(tmp_path: Path) -> None:
    config = build_config(
        {
            "STATE_DIR": str(tmp_path / "state"),
            "VAULT_CALLERS_FILE": str(tmp_path / "elsewhere" / "vc.json"),
            "GATEWAY_VAULT_TOKEN_FILE": str(tmp_path / "elsewhere" / "gv.token"),
        }
    )
    prepare_state(config)
    registry = CallerRegistry.load(tmp_path / "elsewhere" / "vc.json")
    gateway = registry.authenticate((tmp_path / "elsewhere" / "gv.token").read_text().strip())
    assert gateway is not None and gateway.name == "gateway"


def test_make_run_sets_only_variables_the_services_read() -> None:
    read = set().union(*(variables_read(s) for s in SERVICES))
    assert set(build_config({}).env) <= read
    for grant in GRANTS:
        if grant.token_env is not None:
            client = grant.token_env.split("_")[0].lower()
            assert grant.token_env in variables_read(client)
        assert f"{grant.server.upper()}_CALLERS_FILE" in variables_read(grant.server)
