"""`GATEWAY_REDIS_URL` and `GATEWAY_REDIS_PREFIX`: parsing, errors naming the variable, and a
password that never shows."""

from __future__ import annotations

import pytest

from services.gateway.redis_url import RedisUrl, parse_redis_url
from services.gateway.settings import GatewaySettings

PASSWORD = "s3cret-redis-pass"


def test_unset_means_in_process_limits() -> None:
    settings = GatewaySettings.from_env({"GATEWAY_REDIS_URL": ""})
    assert settings.redis_url is None
    assert settings.redis_prefix == "aicreds"


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "redis://redis",
        f"rediss://default:{PASSWORD}@redis.example.com:6380/2",
        "unix:///run/redis/redis.sock?db=1",
    ],
)
def test_the_three_schemes_are_read(url: str) -> None:
    settings = GatewaySettings.from_env(
        {"GATEWAY_REDIS_URL": url, "GATEWAY_REDIS_PREFIX": "prod-eu"}
    )
    assert settings.redis_url == RedisUrl(url)
    assert settings.redis_prefix == "prod-eu"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://redis:6379", "the scheme 'http'"),
        (f"user:{PASSWORD}@redis:6379", "no scheme"),
        ("redis:6379", "no scheme"),
        (f"redis://:{PASSWORD}@redis:notaport/0", "not a valid Redis URL"),
        ("redis:///0", "names no host"),
        ("unix://", "names the socket"),
    ],
)
def test_a_bad_url_is_refused_naming_the_variable_not_the_password(url: str, says: str) -> None:
    with pytest.raises(ValueError) as refused:
        GatewaySettings.from_env({"GATEWAY_REDIS_URL": url})
    assert "GATEWAY_REDIS_URL" in str(refused.value)
    assert says in str(refused.value)
    assert PASSWORD not in str(refused.value)


def test_the_password_never_shows() -> None:
    url = parse_redis_url(f"redis://default:{PASSWORD}@redis:6379/0")
    assert url is not None
    assert str(url) == "redis://default:***@redis:6379/0"
    assert PASSWORD not in repr(url)
    assert PASSWORD not in repr(GatewaySettings(redis_url=url))
    in_query = parse_redis_url(f"unix:///run/redis.sock?db=1&password={PASSWORD}")
    assert str(in_query) == "unix:///run/redis.sock?db=1&password=***"


@pytest.mark.parametrize("prefix", ["", "has space", "x" * 65, "a{b}"])
def test_a_bad_prefix_is_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="GATEWAY_REDIS_PREFIX"):
        GatewaySettings(redis_prefix=prefix).validate()
