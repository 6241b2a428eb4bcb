"""Every failure of a model call in the vendor's shape (`vendor_errors.py`, rendered by the
middleware with the route's renderer, or by the answer once the router was asked)."""

from __future__ import annotations

import anthropic
import grpc
import grpc.aio
import httpx
import openai
import pytest
from starlette.applications import Starlette

from services.common.logging import JsonFormatter
from tests.gateway.model_api.conftest import (
    BUG_TEXT,
    EXPLODES,
    GOOD,
    JSON,
    LIMITED,
    NO_SCOPE,
    SSE,
    Gateway,
    anthropic_client,
    openai_client,
    stub_app,
)
from tests.gateway.support.stub_backends import RouterScript
from tests.support.asgi import serve_asgi
from tests.support.fake_upstream import anthropic_events, openai_events

# -- errors in each vendor's shape ------------------------------------------------------------


def test_authentication_scope_and_rate_limit_errors_raise_the_documented_exceptions(
    gw: Gateway,
) -> None:
    cases: list[tuple[str, type[openai.APIStatusError], type[anthropic.APIStatusError], str]] = [
        ("sk-aic-wrong", openai.AuthenticationError, anthropic.AuthenticationError, "unknown"),
        (NO_SCOPE, openai.PermissionDeniedError, anthropic.PermissionDeniedError, "llm:invoke"),
        (LIMITED, openai.RateLimitError, anthropic.RateLimitError, "too many"),
    ]
    for token, openai_error, anthropic_error, words in cases:
        with openai_client(gw, token) as client, pytest.raises(openai_error, match=words) as oe:
            client.chat.completions.create(model="gpt-4", messages=[])
        with anthropic_client(gw, token) as ac, pytest.raises(anthropic_error, match=words) as ae:
            ac.messages.create(model="claude", max_tokens=1, messages=[])
        assert ae.value.type in ("authentication_error", "permission_error", "rate_limit_error")
        assert oe.value.code in ("unauthorized", "forbidden", "rate_limited")
    assert oe.value.response.headers["retry-after"] == "30"
    assert gw.router.requests == []


def test_an_unexpected_error_is_a_fixed_500_in_the_vendor_shape(
    gw: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    with openai_client(gw, EXPLODES) as client:
        with pytest.raises(openai.InternalServerError, match="internal error") as err:
            client.chat.completions.create(model="gpt-4", messages=[])
        with pytest.raises(openai.InternalServerError, match="internal error"):
            client.models.list()
    assert err.value.code == "internal"
    with anthropic_client(gw, EXPLODES) as ac:
        with pytest.raises(anthropic.InternalServerError, match="internal error"):
            ac.messages.create(model="claude", max_tokens=1, messages=[])
    bearer = {"Authorization": f"Bearer {EXPLODES}"}
    openai_answer = httpx.post(f"{gw.url}/v1/chat/completions", headers=bearer, json={})
    assert openai_answer.status_code == 500
    assert openai_answer.json() == {
        "error": {
            "message": "internal error",
            "type": "server_error",
            "param": None,
            "code": "internal",
        }
    }
    anthropic_answer = httpx.post(f"{gw.url}/v1/messages", headers=bearer, json={})
    assert anthropic_answer.status_code == 500
    assert anthropic_answer.json() == {
        "type": "error",
        "error": {"type": "api_error", "message": "internal error"},
    }
    listed = httpx.get(f"{gw.url}/v1/models", headers={**bearer, "anthropic-version": "2023-06-01"})
    assert listed.status_code == 500 and listed.json()["type"] == "error"
    assert BUG_TEXT not in openai_answer.text + anthropic_answer.text + listed.text
    # Logged once per request, by the middleware; as the service writes it (JSON lines), the
    # exception is named by its type only.
    logged = [getattr(r, "fields", {}) for r in caplog.records if r.name == "aicreds.gateway"]
    assert {"error": "RuntimeError", "route": "/v1/chat/completions"} in logged
    assert {"error": "RuntimeError", "route": "/v1/messages"} in logged
    written = "\n".join(JsonFormatter("gateway").format(r) for r in caplog.records)
    assert "RuntimeError" in written and BUG_TEXT not in written


ROUTER_FAILURES = [
    # router status, reason, HTTP status, openai exception, anthropic exception
    (
        grpc.StatusCode.NOT_FOUND,
        "model_not_found",
        404,
        openai.NotFoundError,
        anthropic.NotFoundError,
    ),
    (
        grpc.StatusCode.FAILED_PRECONDITION,
        "credential_not_found",
        424,
        openai.APIStatusError,
        anthropic.APIStatusError,
    ),
    (
        grpc.StatusCode.UNAVAILABLE,
        "vault_unavailable",
        503,
        openai.InternalServerError,
        anthropic.ServiceUnavailableError,
    ),
    (
        grpc.StatusCode.UNAVAILABLE,
        "upstream_unavailable",
        502,
        openai.InternalServerError,
        anthropic.InternalServerError,
    ),
    (
        grpc.StatusCode.DEADLINE_EXCEEDED,
        "upstream_timeout",
        504,
        openai.InternalServerError,
        anthropic.GatewayTimeoutError,
    ),
]


@pytest.mark.parametrize(
    ("code", "reason", "status", "openai_error", "anthropic_error"), ROUTER_FAILURES
)
def test_router_failures_become_vendor_errors(
    gw: Gateway,
    code: grpc.StatusCode,
    reason: str,
    status: int,
    openai_error: type[openai.APIStatusError],
    anthropic_error: type[anthropic.APIStatusError],
) -> None:
    details = f"what failed: {reason}"
    gw.router.script = RouterScript(fail_before_head=(code, details, reason))
    with openai_client(gw) as client, pytest.raises(openai_error, match=details) as oe:
        client.chat.completions.create(model="gpt-9", messages=[])
    assert (oe.value.status_code, oe.value.code) == (status, reason)
    with anthropic_client(gw) as ac, pytest.raises(anthropic_error, match=details) as ae:
        ac.messages.create(model="claude-9", max_tokens=1, messages=[])
    assert ae.value.status_code == status
    assert ae.value.response.json()["type"] == "error"


def test_an_unreachable_router_is_503_naming_the_router(gw: Gateway) -> None:
    async def build() -> Starlette:
        return stub_app(grpc.aio.insecure_channel("127.0.0.1:1"))

    async def call() -> httpx.Response:
        async with serve_asgi(await build()) as url, httpx.AsyncClient() as client:
            return await client.post(
                f"{url}/v1/chat/completions",
                json={"model": "gpt-4", "messages": []},
                headers={"Authorization": f"Bearer {GOOD}"},
            )

    response = gw.loop.run(call())
    assert response.status_code == 503
    assert response.json()["error"] == {
        "message": "router is unavailable",
        "type": "server_error",
        "param": None,
        "code": "unavailable",
    }


def test_failure_mid_stream_ends_the_event_stream_with_an_error_event(gw: Gateway) -> None:
    failure = (grpc.StatusCode.UNAVAILABLE, "upstream connection lost", "upstream_unavailable")
    gw.router.script = RouterScript(
        headers=SSE, chunks=openai_events("gpt-4")[:2], fail_after_chunks=failure
    )
    with openai_client(gw) as client:
        stream = client.chat.completions.create(model="gpt-4", messages=[], stream=True)
        with pytest.raises(openai.APIError, match="upstream connection lost"):
            list(stream)
    gw.router.script = RouterScript(
        headers=SSE, chunks=anthropic_events("claude")[:2], fail_after_chunks=failure
    )
    with anthropic_client(gw) as client:
        stream2 = client.messages.create(model="claude", max_tokens=1, messages=[], stream=True)
        with pytest.raises(anthropic.APIStatusError, match="upstream connection lost"):
            list(stream2)


def test_failure_mid_body_of_a_collected_answer_is_still_a_clean_error(gw: Gateway) -> None:
    failure = (grpc.StatusCode.UNAVAILABLE, "upstream connection lost", "upstream_unavailable")
    gw.router.script = RouterScript(headers=JSON, chunks=[b'{"id": '], fail_after_chunks=failure)
    with openai_client(gw) as client:
        with pytest.raises(openai.InternalServerError, match="upstream connection lost") as err:
            client.chat.completions.create(model="gpt-4", messages=[])
    assert err.value.status_code == 502


def test_failure_mid_body_of_a_relayed_answer_cuts_the_connection(gw: Gateway) -> None:
    failure = (grpc.StatusCode.UNAVAILABLE, "upstream connection lost", "upstream_unavailable")
    gw.router.script = RouterScript(headers=JSON, chunks=[b'{"id": '], fail_after_chunks=failure)
    body = {"model": "gpt-4", "stream": True}
    with httpx.Client() as client:
        with client.stream(
            "POST",
            f"{gw.openai_url}/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {GOOD}"},
        ) as response:
            assert response.status_code == 200
            # Never a truncated body that looks whole: the chunked message is left unfinished.
            with pytest.raises(httpx.RemoteProtocolError):
                response.read()


def test_bad_bodies_are_400_in_the_vendor_shape(gw: Gateway) -> None:
    headers = {"Authorization": f"Bearer {GOOD}"}
    for body in (b"{not json", b"[1]", b'{"messages": []}', b"[" * 100_000, b'{"model": 4}'):
        response = httpx.post(f"{gw.openai_url}/chat/completions", content=body, headers=headers)
        assert response.status_code == 400
        assert response.json()["error"]["type"] == "invalid_request_error"
    response = httpx.post(f"{gw.url}/v1/messages", content=b"{}", headers=headers)
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert response.json()["type"] == "error"
    assert gw.router.requests == []
