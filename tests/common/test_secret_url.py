"""A connection URL's password never shows: in the userinfo or as a `password=` option."""

from __future__ import annotations

import pytest

from services.common.secret_url import SecretUrl
from services.gateway.redis_url import RedisUrl
from services.vault.store.location import PostgresUrl, parse_location


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://vault:s3cret@db:5432/aicreds", "postgresql://vault:***@db:5432/aicreds"),
        (
            "postgresql://vault@db/aicreds?sslmode=require&password=s3cret",
            "postgresql://vault@db/aicreds?sslmode=require&password=***",
        ),
        ("redis://:s3cret@redis:6379/0", "redis://:***@redis:6379/0"),
        ("unix:///run/redis.sock?db=1&password=s3cret", "unix:///run/redis.sock?db=1&password=***"),
        ("postgresql://vault:s3cret@db:port/aicreds", "postgresql://vault:***@db:port/aicreds"),
        ("postgresql://postgres@127.0.0.1:5432/test", "postgresql://postgres@127.0.0.1:5432/test"),
        # libpq's password for the client key, and names the drivers percent-decode.
        ("postgresql://vault@db/a?sslpassword=s3cret", "postgresql://vault@db/a?sslpassword=***"),
        ("postgresql://vault@db/a?pass%77ord=s3cret", "postgresql://vault@db/a?pass%77ord=***"),
        ("redis://redis:6379/0?PASSWORD=s3cret", "redis://redis:6379/0?PASSWORD=***"),
    ],
)
def test_the_password_is_masked_wherever_the_url_is_shown(url: str, shown: str) -> None:
    for kind in (SecretUrl, PostgresUrl, RedisUrl):
        secret = kind(url)
        assert secret.url == url
        assert str(secret) == shown
        assert repr(secret) == f"{kind.__name__}({shown!r})"
        assert "s3cret" not in f"{secret} {secret!r} {[secret]} {secret.redacted}"


def test_a_bad_postgresql_url_is_refused_without_its_password() -> None:
    with pytest.raises(ValueError) as refused:
        parse_location("postgresql://vault:s3cret@db:port/aicreds")
    assert "VAULT_DATABASE" in str(refused.value)
    assert "s3cret" not in str(refused.value)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://vault:s3cret@db/aicreds",
        "postgresql://vault@db/aicreds?sslpassword=s3cret",
        "postgresql://vault@db/aicreds?password=s3%63ret",
        "postgresql://vault:s3%63ret@db/aicreds",
    ],
)
def test_a_drivers_message_that_echoes_a_password_is_scrubbed(url: str) -> None:
    message = "could not connect: password s3cret was refused; raw s3%63ret"
    scrubbed = PostgresUrl(url).scrub(message)
    assert "s3cret" not in scrubbed
    assert scrubbed.startswith("could not connect: password *** was refused")
