"""SPEC 2.1 over HTTP: Bearer and x-api-key everywhere, 401/403, X-Debug-Auth, rate limits,
revocation, and the isolation of users."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest
from aicreds.vault.v1 import auth_pb2, auth_pb2_grpc

from services.common.scopes import ALL_SCOPES
from services.gateway.app import create_app
from services.gateway.endpoint_table import Endpoint
from services.gateway.settings import GatewaySettings
from tests.support.stack import Minted, Stack, StackFactory

CREDS = "/api/v2/users/me/ai-credentials"
#: Every REST v2 operation the application serves.
REST_ENDPOINTS: tuple[Endpoint, ...] = create_app(GatewaySettings()).state.rest_endpoints
AUTH_ENDPOINTS = [e for e in REST_ENDPOINTS if not e.token_only]


def _path(endpoint: Endpoint) -> str:
    return (
        endpoint.path.replace("{key}", "some_key")
        .replace("{name}", "some-provider")
        .replace("{id}", "tok_missing")
    )


def _body(endpoint: Endpoint) -> dict[str, object] | None:
    if endpoint.request_schema is None:
        return None
    if endpoint.path.endswith("ai-credentials"):
        return {"credentials": {"k": "v"}}
    if endpoint.path.endswith("{key}"):
        return {"value": "v"}
    if "ai-providers" in endpoint.path:
        return {
            "name": "some-provider",
            "kind": "custom",
            "base_url": "https://api.example.com",
            "headers": {},
            "models": [],
        }
    return {"name": "t"}


async def _call(stack: Stack, endpoint: Endpoint, headers: dict[str, str]) -> httpx.Response:
    return await stack.client.request(
        endpoint.method, _path(endpoint), headers=headers, json=_body(endpoint)
    )


def _not_an_auth_error(response: httpx.Response) -> bool:
    return response.status_code not in (401, 403, 429) and response.status_code < 500


def _ids(endpoint: Endpoint) -> str:
    return f"{endpoint.method} {endpoint.path}"


@pytest.mark.parametrize("endpoint", REST_ENDPOINTS, ids=_ids)
async def test_bearer_and_x_api_key_work_everywhere(stack: Stack, endpoint: Endpoint) -> None:
    minted = await stack.mint("alice")
    for headers in (minted.bearer(), minted.api_key()):
        response = await _call(stack, endpoint, headers)
        assert _not_an_auth_error(response), (headers.keys(), response.text)
        assert response.headers["X-RateLimit-Limit"]


@pytest.mark.parametrize("endpoint", REST_ENDPOINTS, ids=_ids)
async def test_no_credentials_is_401_everywhere(stack: Stack, endpoint: Endpoint) -> None:
    response = await _call(stack, endpoint, {})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("endpoint", [e for e in REST_ENDPOINTS if e.scope is not None], ids=_ids)
async def test_each_scope_is_enforced(stack: Stack, endpoint: Endpoint) -> None:
    assert endpoint.scope is not None
    others = [s for s in ALL_SCOPES if s != endpoint.scope]
    lacking = await stack.mint("alice", others)
    response = await _call(stack, endpoint, {**lacking.bearer(), "X-Debug-Auth": "true"})
    assert response.status_code == 403
    error = response.json()["error"]
    assert error == {
        "code": "forbidden",
        "message": f"this token lacks the scope '{endpoint.scope}'",
    }
    debug = response.headers["X-Debug-Auth"]
    assert "reason=missing scope" in debug and endpoint.scope in debug
    holding = await stack.mint("alice", [endpoint.scope])
    assert _not_an_auth_error(await _call(stack, endpoint, holding.bearer()))


def _assert_no_token_piece(text: str, token: str) -> None:
    for start in range(len(token) - 11):
        assert token[start : start + 12] not in text


async def test_401_reasons_in_x_debug_auth(stack: Stack) -> None:
    minted = await stack.mint("alice")
    unknown = "sk-aic-" + "Z" * 43
    cases: list[tuple[dict[str, str], str]] = [
        ({}, "reason=no credentials sent"),
        ({"Authorization": f"Basic {minted.token}"}, "reason=malformed header"),
        ({"Authorization": "Bearer"}, "reason=malformed header"),
        ({"Authorization": "Bearer not-a-token"}, "reason=malformed token"),
        ({"x-api-key": "sk-aic-short"}, "reason=malformed token"),
        ({"Authorization": f"Bearer {unknown}"}, "reason=unknown token"),
        ({"x-api-key": unknown}, "reason=unknown token"),
    ]
    for headers, reason in cases:
        response = await stack.client.get(CREDS, headers={**headers, "X-Debug-Auth": "true"})
        assert response.status_code == 401, headers
        assert response.json()["error"]["code"] == "unauthorized"
        debug = response.headers["X-Debug-Auth"]
        assert "result=denied" in debug and reason in debug, (headers, debug)
        _assert_no_token_piece(debug, minted.token)
        _assert_no_token_piece(debug, unknown)
        _assert_no_token_piece(response.text, unknown)
    response = await stack.client.get(
        CREDS, headers={"Authorization": f"Bearer {unknown}", "X-Debug-Auth": "true"}
    )
    assert "method=bearer" in response.headers["X-Debug-Auth"]
    assert "token_prefix=sk-aic-Z" in response.headers["X-Debug-Auth"]


async def test_x_debug_auth_on_success_and_only_when_asked(stack: Stack) -> None:
    minted = await stack.mint("alice", ["credentials:read"])
    response = await stack.client.get(CREDS, headers=minted.api_key())
    assert "X-Debug-Auth" not in response.headers
    response = await stack.client.get(CREDS, headers={**minted.api_key(), "X-Debug-Auth": "true"})
    debug = response.headers["X-Debug-Auth"]
    assert debug == (
        f"result=ok; method=x-api-key; token_id={minted.id}; token_prefix={minted.token[:8]}; "
        "user_id=alice; scopes=credentials:read"
    )
    _assert_no_token_piece(debug, minted.token)
    # The same token presented the other way (a cached authentication) says so.
    response = await stack.client.get(CREDS, headers={**minted.bearer(), "X-Debug-Auth": "true"})
    assert "method=bearer" in response.headers["X-Debug-Auth"]


async def test_revoked_token_is_401_at_once_here_and_within_the_cache_ttl_elsewhere(
    gateway_stack: StackFactory,
) -> None:
    here = await gateway_stack(auth_cache_ttl=1.0)
    elsewhere = await gateway_stack(auth_cache_ttl=1.0)
    victim = await here.mint("alice")
    admin = await here.mint("alice")
    for stack in (here, elsewhere):
        assert (await stack.client.get(CREDS, headers=victim.bearer())).status_code == 200
    response = await here.client.delete(
        f"/api/v2/users/me/api-tokens/{victim.id}", headers=admin.bearer()
    )
    assert response.status_code == 200
    assert response.json()["response"]["revoked_at"]
    response = await here.client.get(CREDS, headers={**victim.bearer(), "X-Debug-Auth": "true"})
    assert response.status_code == 401
    assert "reason=revoked" in response.headers["X-Debug-Auth"]
    await asyncio.sleep(1.1)
    response = await elsewhere.client.get(
        CREDS, headers={**victim.bearer(), "X-Debug-Auth": "true"}
    )
    assert response.status_code == 401
    assert "reason=revoked" in response.headers["X-Debug-Auth"]


async def test_revoked_through_the_vault_stops_within_the_cache_ttl(
    gateway_stack: StackFactory,
) -> None:
    stack = await gateway_stack(auth_cache_ttl=0.5)
    minted = await stack.mint("alice")
    assert (await stack.client.get(CREDS, headers=minted.bearer())).status_code == 200
    stub = auth_pb2_grpc.AuthServiceStub(stack.vault.channel("gateway"))
    await stub.RevokeToken(auth_pb2.RevokeTokenRequest(user_id="alice", token_id=minted.id))
    await asyncio.sleep(0.6)
    assert (await stack.client.get(CREDS, headers=minted.bearer())).status_code == 401


async def test_expired_token_is_401(gateway_stack: StackFactory) -> None:
    stack = await gateway_stack(auth_cache_ttl=30.0)
    minted = await stack.mint("alice", expires_in=2)
    assert (await stack.client.get(CREDS, headers=minted.bearer())).status_code == 200
    await asyncio.sleep(2.2)
    response = await stack.client.get(CREDS, headers={**minted.bearer(), "X-Debug-Auth": "true"})
    assert response.status_code == 401
    assert "reason=expired" in response.headers["X-Debug-Auth"]


async def test_rate_limit_429_after_burst_and_retry_after_is_honoured(
    gateway_stack: StackFactory,
) -> None:
    stack = await gateway_stack(rate_limit=0.5, rate_burst=3)
    minted = await stack.mint("alice")
    statuses = []
    for _ in range(3):
        response = await stack.client.get(CREDS, headers=minted.bearer())
        statuses.append(response.status_code)
        assert response.headers["X-RateLimit-Limit"] == "3"
    assert statuses == [200, 200, 200]
    assert response.headers["X-RateLimit-Remaining"] == "0"
    limited = await stack.client.get(CREDS, headers=minted.bearer())
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limited"
    retry_after = int(limited.headers["Retry-After"])
    assert retry_after >= 1
    for name in ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"):
        assert re.fullmatch(r"\d+", limited.headers[name])
    # Another token of the same user has its own bucket.
    other = await stack.mint("alice")
    assert (await stack.client.get(CREDS, headers=other.bearer())).status_code == 200
    await asyncio.sleep(retry_after)
    assert (await stack.client.get(CREDS, headers=minted.bearer())).status_code == 200


async def test_failed_authentications_are_limited_per_address(
    gateway_stack: StackFactory,
) -> None:
    stack = await gateway_stack(auth_fail_rate=0.1, auth_fail_burst=3)
    good = await stack.mint("alice")
    assert (await stack.client.get(CREDS, headers=good.bearer())).status_code == 200
    guesses = [f"sk-aic-{i:043d}" for i in range(5)]
    statuses = [
        (await stack.client.get(CREDS, headers={"x-api-key": g})).status_code for g in guesses
    ]
    assert statuses == [401, 401, 401, 429, 429]
    limited = await stack.client.get(
        CREDS, headers={"x-api-key": guesses[0], "X-Debug-Auth": "true"}
    )
    assert int(limited.headers["Retry-After"]) >= 1
    assert limited.json()["error"]["code"] == "rate_limited"
    assert "too many failed authentications" in limited.headers["X-Debug-Auth"]
    # A token that authenticated recently is not a guess: it still works from this address.
    assert (await stack.client.get(CREDS, headers=good.bearer())).status_code == 200


async def test_users_are_isolated(stack: Stack) -> None:
    alice = await stack.mint("alice")
    bob = await stack.mint("bob")
    await stack.client.put(CREDS, headers=alice.bearer(), json={"credentials": {"k": "alice-v"}})
    response = await stack.client.get(CREDS, headers=bob.bearer())
    assert response.json() == {"response": {"credentials": {}}}
    assert (await stack.client.get(f"{CREDS}/k", headers=bob.bearer())).status_code == 404
    assert (await stack.client.delete(f"{CREDS}/k", headers=bob.bearer())).status_code == 404
    await stack.client.delete(CREDS, headers=bob.bearer())
    await stack.client.put(f"{CREDS}/k", headers=bob.bearer(), json={"value": "bob-v"})
    response = await stack.client.get(f"{CREDS}/k", headers=alice.bearer())
    assert response.json() == {"response": {"key": "k", "value": "alice-v"}}
    # Bob cannot revoke Alice's token.
    response = await stack.client.delete(
        f"/api/v2/users/me/api-tokens/{alice.id}", headers=bob.bearer()
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "token_not_found"
    assert (await stack.client.get(CREDS, headers=alice.bearer())).status_code == 200
    listed = (await stack.client.get("/api/v2/users/me/api-tokens", headers=bob.bearer())).json()
    assert [t["id"] for t in listed["response"]["tokens"]] == [bob.id]


async def test_vault_outage_is_503_not_401(gateway_stack: StackFactory) -> None:
    stack = await gateway_stack()
    minted: Minted = await stack.mint("alice")
    await stack.vault.running.stop(0)
    response = await stack.client.get(CREDS, headers=minted.bearer())
    assert response.status_code == 503
    assert response.json() == {"error": {"code": "unavailable", "message": "vault is unavailable"}}
