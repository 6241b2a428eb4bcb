"""`env_client_tls`: the client TLS settings the gateway and the router read alike."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.grpc_server import ClientTls
from services.common.settings import env_client_tls


def test_unset_is_plaintext() -> None:
    assert env_client_tls({}, "X_TLS") is None


def test_a_ca_alone_and_with_a_client_certificate() -> None:
    assert env_client_tls({"X_TLS_CA": "/ca.pem"}, "X_TLS") == ClientTls(Path("/ca.pem"))
    environ = {"X_TLS_CA": "/ca.pem", "X_TLS_CERT": "/c.pem", "X_TLS_KEY": "/k.pem"}
    assert env_client_tls(environ, "X_TLS") == ClientTls(
        Path("/ca.pem"), Path("/c.pem"), Path("/k.pem")
    )


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"X_TLS_CA": "/ca.pem", "X_TLS_CERT": "/c.pem"}, "X_TLS_KEY"),
        ({"X_TLS_CA": "/ca.pem", "X_TLS_KEY": "/k.pem"}, "X_TLS_CERT"),
        ({"X_TLS_CERT": "/c.pem", "X_TLS_KEY": "/k.pem"}, "X_TLS_CA"),
    ],
)
def test_incomplete_settings_name_the_variable(environ: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        env_client_tls(environ, "X_TLS")
