"""Pure parts of the gateway: credential extraction, X-Debug-Auth, error mapping, masking,
body validation and settings."""

from __future__ import annotations

from pathlib import Path

import grpc
import grpc.aio
import pytest

from services.gateway.auth import (
    SESSION_COOKIE,
    AuthFailure,
    AuthMethod,
    PresentedCredential,
    Principal,
    extract_credential,
)
from services.gateway.debug_auth import describe_failure, describe_success, wants_debug
from services.gateway.errors import ApiError, from_rpc_error
from services.gateway.rest_api.credentials import mask_credential_value
from services.gateway.settings import GatewaySettings
from services.gateway.validation import (
    check_credential_key,
    parse_credential_map,
    parse_credential_value,
    parse_flag,
    parse_scopes,
)

TOKEN = "sk-aic-" + "Q" * 20 + "abcdefghijklmnopqrstuvw"


# Credential extraction


def test_bearer_wins_over_api_key_and_cookie() -> None:
    found = extract_credential(
        {"authorization": f"Bearer {TOKEN}", "x-api-key": "other"}, {SESSION_COOKIE: "s"}
    )
    assert found == PresentedCredential(AuthMethod.BEARER, TOKEN)


def test_bearer_scheme_is_case_insensitive() -> None:
    assert extract_credential({"authorization": f"bearer {TOKEN}"}, {}) == PresentedCredential(
        AuthMethod.BEARER, TOKEN
    )


def test_api_key_then_cookie() -> None:
    assert extract_credential({"x-api-key": TOKEN}, {}) == PresentedCredential(
        AuthMethod.X_API_KEY, TOKEN
    )
    assert extract_credential({}, {SESSION_COOKIE: "sess"}) == PresentedCredential(
        AuthMethod.SESSION, "sess"
    )


@pytest.mark.parametrize(
    "headers",
    [
        {"authorization": f"Basic {TOKEN}"},
        {"authorization": "Bearer"},
        {"authorization": "Bearer "},
        {"authorization": TOKEN},
        {"authorization": "Bearer two words"},
        {"x-api-key": ""},
        {"x-api-key": "a\x01b"},
    ],
)
def test_malformed_headers(headers: dict[str, str]) -> None:
    assert extract_credential(headers, {}) is AuthFailure.MALFORMED_HEADER


def test_nothing_sent() -> None:
    assert extract_credential({}, {}) is AuthFailure.NO_CREDENTIALS


def test_presented_credential_repr_hides_the_secret() -> None:
    assert TOKEN not in repr(PresentedCredential(AuthMethod.BEARER, TOKEN))


# X-Debug-Auth


def _principal(method: AuthMethod = AuthMethod.BEARER) -> Principal:
    return Principal(
        user_id="alice",
        token_id="tok_0123",
        token_prefix=TOKEN[:8],
        scopes=frozenset({"credentials:read", "llm:invoke"}),
        method=method,
    )


def test_debug_success_describes_method_token_user_scopes() -> None:
    text = describe_success(_principal())
    assert text == (
        "result=ok; method=bearer; token_id=tok_0123; token_prefix=sk-aic-Q; user_id=alice; "
        "scopes=credentials:read,llm:invoke"
    )


@pytest.mark.parametrize("failure", list(AuthFailure))
def test_debug_failure_names_reason_and_at_most_8_characters(failure: AuthFailure) -> None:
    text = describe_failure(failure, presented=PresentedCredential(AuthMethod.X_API_KEY, TOKEN))
    assert f"reason={failure.value}" in text
    assert "method=x-api-key" in text
    assert "token_prefix=sk-aic-Q;" in text
    for start in range(len(TOKEN) - 8):
        assert TOKEN[start : start + 9] not in text


def test_debug_failure_shows_nothing_of_short_tokens_or_sessions() -> None:
    short = "sk-aic-short"
    assert "sk-aic" not in describe_failure(
        AuthFailure.MALFORMED_TOKEN, presented=PresentedCredential(AuthMethod.BEARER, short)
    )
    session = "s" * 40
    text = describe_failure(
        AuthFailure.EXPIRED, presented=PresentedCredential(AuthMethod.SESSION, session)
    )
    assert "sss" not in text and "method=session" in text


def test_debug_missing_scope_names_the_scope() -> None:
    text = describe_failure(
        AuthFailure.MISSING_SCOPE, principal=_principal(), detail="tokens:manage"
    )
    assert "reason=missing scope; detail=tokens:manage" in text
    assert "user_id=alice" in text


def test_debug_header_text_is_sanitised() -> None:
    principal = Principal("bob;x=1\r\n", "tok", "sk-aic-x", frozenset(), AuthMethod.SESSION)
    text = describe_success(principal)
    assert "\r" not in text and "\n" not in text and "x=1" not in text.split("user_id=")[1]


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("TRUE", True), ("1", True), ("false", False), ("", False), (None, False)],
)
def test_wants_debug(value: str | None, expected: bool) -> None:
    assert wants_debug(value) is expected


# Error mapping (grpc-gateway table)


def _rpc_error(
    code: grpc.StatusCode, details: str, reason: str | None = None
) -> grpc.aio.AioRpcError:
    trailing = grpc.aio.Metadata(("x-error-reason", reason)) if reason else grpc.aio.Metadata()
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailing, details)


@pytest.mark.parametrize(
    ("code", "status", "default_code"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, 400, "invalid_argument"),
        (grpc.StatusCode.NOT_FOUND, 404, "not_found"),
        (grpc.StatusCode.ALREADY_EXISTS, 409, "already_exists"),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 429, "rate_limited"),
        (grpc.StatusCode.CANCELLED, 499, "cancelled"),
        (grpc.StatusCode.UNAVAILABLE, 503, "unavailable"),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 504, "deadline_exceeded"),
        (grpc.StatusCode.FAILED_PRECONDITION, 424, "failed_precondition"),
        (grpc.StatusCode.INTERNAL, 500, "internal"),
    ],
)
def test_grpc_status_to_http(code: grpc.StatusCode, status: int, default_code: str) -> None:
    err = from_rpc_error(_rpc_error(code, "something public"), "vault")
    assert (err.status, err.code) == (status, default_code)


def test_error_reason_becomes_the_rest_code_and_message_passes() -> None:
    err = from_rpc_error(
        _rpc_error(grpc.StatusCode.NOT_FOUND, "credential 'k' not found", "credential_not_found"),
        "vault",
    )
    assert (err.status, err.code, err.message) == (
        404,
        "credential_not_found",
        "credential 'k' not found",
    )
    assert err.body() == {
        "error": {"code": "credential_not_found", "message": "credential 'k' not found"}
    }


def test_server_side_details_are_not_passed_on() -> None:
    err = from_rpc_error(_rpc_error(grpc.StatusCode.INTERNAL, "db said sk-secret"), "vault")
    assert "sk-secret" not in err.message
    err = from_rpc_error(_rpc_error(grpc.StatusCode.UNAVAILABLE, "connect to 10.0.0.1"), "vault")
    assert err.message == "vault is unavailable"


@pytest.mark.parametrize(
    "code", [grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED]
)
def test_a_backend_refusing_the_gateway_is_not_the_clients_fault(code: grpc.StatusCode) -> None:
    err = from_rpc_error(_rpc_error(code, "caller not authenticated"), "vault")
    assert err.status == 500


def test_a_user_facing_permission_denial_keeps_its_reason() -> None:
    err = from_rpc_error(
        _rpc_error(grpc.StatusCode.PERMISSION_DENIED, "egress refused", "egress_denied"), "router"
    )
    assert (err.status, err.code) == (403, "egress_denied")


@pytest.mark.parametrize(
    ("code", "reason", "status"),
    [
        (grpc.StatusCode.UNAVAILABLE, "upstream_unavailable", 502),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "upstream_timeout", 504),
        (grpc.StatusCode.UNAVAILABLE, "vault_unavailable", 503),
    ],
)
def test_a_failure_behind_the_router_keeps_its_reason_status_and_message(
    code: grpc.StatusCode, reason: str, status: int
) -> None:
    """SPEC 3.3 point 5, in the one table both REST and the model endpoints map through."""
    err = from_rpc_error(
        _rpc_error(code, "could not connect to the upstream api.x", reason), "router"
    )
    assert (err.status, err.code, err.message) == (
        status,
        reason,
        "could not connect to the upstream api.x",
    )
    # Without details the fixed text stands.
    err = from_rpc_error(_rpc_error(code, "", reason), "router")
    assert (err.status, err.code) == (status, reason) and "router" in err.message


def test_the_router_itself_unavailable_is_503_with_a_fixed_message() -> None:
    err = from_rpc_error(_rpc_error(grpc.StatusCode.UNAVAILABLE, "connect to 10.0.0.1"), "router")
    assert (err.status, err.code, err.message) == (503, "unavailable", "router is unavailable")


def test_api_error_repr() -> None:
    assert "ApiError(status=404" in repr(ApiError(404, "not_found", "x"))


# Masking of credential values (SPEC 2.2)


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("sk-1234567890abcdef", "sk-...cdef"),
        ("0123456789abcdef", "012...cdef"),  # exactly 16
        ("0123456789abcde", "MASKED"),  # 15
        ("x", "MASKED"),
    ],
)
def test_mask_credential_value(value: str, masked: str) -> None:
    assert mask_credential_value(value) == masked


# Body validation (SPEC 2.2)


def test_credential_map_is_parsed_and_checked() -> None:
    assert parse_credential_map({"credentials": {"a.b-c_D": "v v\t"}}) == {"a.b-c_D": "v v\t"}
    assert parse_credential_map({"credentials": {}}) == {}


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ([], "JSON object"),
        ({}, "credentials"),
        ({"credentials": []}, "credentials"),
        ({"credentials": {"bad key": "v"}}, "bad key"),
        ({"credentials": {"k" * 129: "v"}}, "kkkk"),
        ({"credentials": {"ok": "", "other": "x"}}, "'ok'"),
        ({"credentials": {"ok": 5}}, "'ok'"),
        ({"credentials": {"crlf": "SECRET\r\nX: y"}}, "'crlf'"),
        ({"credentials": {"nul": "SECRET\x00"}}, "'nul'"),
        ({"credentials": {"utf": "SECRET é"}}, "'utf'"),
        ({"credentials": {"big": "S" * (16 * 1024 + 1)}}, "'big'"),
    ],
)
def test_bad_credential_maps_name_the_key_never_the_value(body: object, named: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_credential_map(body)
    assert caught.value.status == 400 and caught.value.code == "invalid_argument"
    assert named in caught.value.message
    assert "SECRET" not in caught.value.message


def test_value_of_exactly_16_kib_is_accepted() -> None:
    assert len(parse_credential_value("k", {"value": "v" * 16 * 1024})) == 16 * 1024


@pytest.mark.parametrize("body", [{}, {"value": None}, {"value": ["x"]}, "x"])
def test_bad_single_values(body: object) -> None:
    with pytest.raises(ApiError):
        parse_credential_value("k", body)


@pytest.mark.parametrize("key", ["", "a/b", "a b", "é", "k" * 129])
def test_bad_keys(key: str) -> None:
    with pytest.raises(ApiError):
        check_credential_key(key)


def test_scopes_and_flags() -> None:
    assert parse_scopes({"scopes": ["llm:invoke", "credentials:read", "llm:invoke"]}) == [
        "credentials:read",
        "llm:invoke",
    ]
    assert parse_scopes({}) is None
    with pytest.raises(ApiError):
        parse_scopes({"scopes": ["root"]})
    with pytest.raises(ApiError):
        parse_scopes({"scopes": []})
    assert parse_flag("true", "masked") and not parse_flag(None, "masked")
    with pytest.raises(ApiError):
        parse_flag("maybe", "masked")


# Settings


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
    ],
)
def test_bad_settings_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=name.rsplit("_", 1)[0]):
        GatewaySettings.from_env({name: value})
