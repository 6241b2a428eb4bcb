"""`GatewaySettings.from_env`: defaults, the environment, and errors naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.gateway.settings import GatewaySettings


def test_settings_defaults() -> None:
    settings = GatewaySettings.from_env({})
    assert settings.listen == "127.0.0.1:8080"
    assert settings.vault_addr == "127.0.0.1:50051"
    assert settings.router_addr == "127.0.0.1:50052"
    assert settings.vault_token_file == Path(".state/gateway-vault.token")
    assert settings.router_token_file == Path(".state/gateway-router.token")
    assert settings.origin == "http://127.0.0.1:8080"
    assert settings.cookie_secure is True
    assert settings.auth_cache_ttl == 5.0
    assert settings.max_body == 1024 * 1024
    assert settings.llm_max_body == 32 * 1024 * 1024
    assert settings.vault_tls is None
    assert settings.redis_url is None  # no revocation feed: other replicas wait for the TTL
    assert settings.revocation_channel == "aicreds:revocations"


def test_settings_from_environment() -> None:
    settings = GatewaySettings.from_env(
        {
            "STATE_DIR": "/srv/state",
            "GATEWAY_LISTEN": "0.0.0.0:9000",
            "GATEWAY_COOKIE_SECURE": "false",
            "GATEWAY_RATE_LIMIT": "2.5",
            "GATEWAY_RATE_BURST": "7",
            "GATEWAY_VAULT_TLS_CA": "/ca.pem",
            "GATEWAY_VAULT_TLS_CERT": "/c.pem",
            "GATEWAY_VAULT_TLS_KEY": "/k.pem",
            "GATEWAY_ORIGIN": "https://ui.example.com/",
            "GATEWAY_MAX_BODY": "2048",
            "GATEWAY_LLM_MAX_BODY": "8192",
        }
    )
    assert (settings.max_body, settings.llm_max_body) == (2048, 8192)
    assert (settings.listen_host, settings.listen_port) == ("0.0.0.0", 9000)
    assert settings.vault_token_file == Path("/srv/state/gateway-vault.token")
    assert settings.cookie_secure is False
    assert (settings.rate_limit, settings.rate_burst) == (2.5, 7)
    assert settings.vault_tls is not None and settings.vault_tls.cert == Path("/c.pem")
    assert settings.origin == "https://ui.example.com"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GATEWAY_LISTEN", "nowhere"),
        ("GATEWAY_RATE_BURST", "0"),
        ("GATEWAY_RATE_LIMIT", "fast"),
        ("GATEWAY_MAX_BODY", "0"),
        ("GATEWAY_LLM_MAX_BODY", "0"),
        # More than one gRPC message to the router can carry.
        ("GATEWAY_LLM_MAX_BODY", str(64 * 1024 * 1024)),
        ("GATEWAY_ORIGIN", "gateway.test"),
        ("GATEWAY_VAULT_TLS_CERT", "/c.pem"),
        ("GATEWAY_REDIS_URL", "127.0.0.1:6379"),
    ],
)
def test_bad_settings_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=name.rsplit("_", 1)[0]):
        GatewaySettings.from_env({name: value})


def test_redis_and_the_revocation_channel_from_environment() -> None:
    settings = GatewaySettings.from_env(
        {"GATEWAY_REDIS_URL": "redis://redis:6379/0", "GATEWAY_REVOCATION_CHANNEL": "staging:rev"}
    )
    assert settings.redis_url is not None
    assert (settings.redis_url.url, settings.revocation_channel) == (
        "redis://redis:6379/0",
        "staging:rev",
    )


def test_the_redis_url_stays_out_of_the_repr() -> None:
    settings = GatewaySettings.from_env({"GATEWAY_REDIS_URL": "redis://:hunter2-pw@redis:6379/0"})
    assert "hunter2-pw" not in repr(settings)
