"""The one mapping of gRPC statuses to HTTP (`errors.from_rpc_error`, grpc-gateway's table)."""

from __future__ import annotations

import grpc
import grpc.aio
import pytest

from services.gateway.errors import ApiError, from_rpc_error


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
