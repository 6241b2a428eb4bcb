"""SPEC 2.5 over HTTP: login cookie, logout, expiry, and the Origin check on cookie writes."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from http.cookies import SimpleCookie

from services.gateway.auth import SECURE_SESSION_COOKIE as SESSION_COOKIE
from tests.gateway.conftest import TEST_ORIGIN, Minted, Stack, StackFactory

SESSIONS = "/api/v2/sessions"
CREDS = "/api/v2/users/me/ai-credentials"
TOKENS = "/api/v2/users/me/api-tokens"


async def _login(stack: Stack, minted: Minted) -> tuple[str, str]:
    """Log in; return the raw Set-Cookie header and the session secret."""
    response = await stack.client.post(SESSIONS, headers=minted.bearer())
    assert response.status_code == 201, response.text
    set_cookie = response.headers["set-cookie"]
    cookie = SimpleCookie()
    cookie.load(set_cookie)
    (morsel,) = cookie.values()  # __Host-aicreds_session, or aicreds_session on local http
    secret = morsel.value
    assert secret and secret not in response.text
    body = response.json()["response"]
    assert body["session_id"] and body["expires_at"].endswith("Z")
    stack.client.cookies.clear()
    return set_cookie, secret


def _cookie(secret: str) -> dict[str, str]:
    return {"Cookie": f"{SESSION_COOKIE}={secret}"}


async def test_login_sets_a_strict_http_only_secure_cookie(stack: Stack) -> None:
    minted = await stack.mint("alice")
    set_cookie, secret = await _login(stack, minted)
    attributes = [part.strip().lower() for part in set_cookie.split(";")]
    assert "httponly" in attributes
    assert "samesite=strict" in attributes
    assert "secure" in attributes
    assert "path=/" in attributes
    assert any(a.startswith("max-age=") and int(a.split("=")[1]) > 0 for a in attributes)
    response = await stack.client.get(CREDS, headers={**_cookie(secret), "X-Debug-Auth": "true"})
    assert response.status_code == 200
    debug = response.headers["X-Debug-Auth"]
    assert "method=session" in debug and f"token_id={minted.id}" in debug
    assert secret[:12] not in debug


async def test_secure_flag_can_be_disabled_for_local_http(gateway_stack: StackFactory) -> None:
    stack = await gateway_stack(cookie_secure=False)
    set_cookie, _ = await _login(stack, await stack.mint("alice"))
    assert "secure" not in [p.strip().lower() for p in set_cookie.split(";")]


async def test_a_session_cannot_start_a_session(stack: Stack) -> None:
    _, secret = await _login(stack, await stack.mint("alice"))
    response = await stack.client.post(SESSIONS, headers={**_cookie(secret), "Origin": TEST_ORIGIN})
    assert response.status_code == 401
    assert "set-cookie" not in response.headers  # the session itself is still good
    assert (await stack.client.get(CREDS, headers=_cookie(secret))).status_code == 200


async def test_logout_ends_the_session(stack: Stack) -> None:
    _, secret = await _login(stack, await stack.mint("alice"))
    response = await stack.client.delete(
        f"{SESSIONS}/current", headers={**_cookie(secret), "Origin": TEST_ORIGIN}
    )
    assert response.status_code == 200
    assert response.json() == {"response": {"revoked": True}}
    assert "max-age=0" in response.headers["set-cookie"].lower()
    response = await stack.client.get(CREDS, headers={**_cookie(secret), "X-Debug-Auth": "true"})
    assert response.status_code == 401
    assert "method=session" in response.headers["X-Debug-Auth"]
    # A dead session cookie is cleared by the refusal.
    assert "max-age=0" in response.headers["set-cookie"].lower()


async def test_session_expires(gateway_stack: StackFactory) -> None:
    stack = await gateway_stack(session_ttl=2, auth_cache_ttl=30.0)
    _, secret = await _login(stack, await stack.mint("alice"))
    assert (await stack.client.get(CREDS, headers=_cookie(secret))).status_code == 200
    await asyncio.sleep(2.2)
    response = await stack.client.get(CREDS, headers={**_cookie(secret), "X-Debug-Auth": "true"})
    assert response.status_code == 401
    assert "reason=expired" in response.headers["X-Debug-Auth"]


async def test_revoking_the_token_ends_its_sessions(stack: Stack) -> None:
    minted = await stack.mint("alice")
    admin = await stack.mint("alice")
    _, secret = await _login(stack, minted)
    await stack.client.delete(f"/api/v2/users/me/api-tokens/{minted.id}", headers=admin.bearer())
    assert (await stack.client.get(CREDS, headers=_cookie(secret))).status_code == 401


async def test_cookie_writes_need_the_gateway_origin(stack: Stack) -> None:
    minted = await stack.mint("alice")
    _, secret = await _login(stack, minted)
    body = {"value": "v"}
    for origin in ("https://evil.example", None, "null"):
        headers = _cookie(secret) | ({"Origin": origin} if origin else {})
        response = await stack.client.put(f"{CREDS}/k", headers=headers, json=body)
        assert response.status_code == 403, origin
        assert response.json()["error"]["code"] == "forbidden"
    assert (await stack.client.get(CREDS, headers=_cookie(secret))).json() == {
        "response": {"credentials": {}}
    }
    response = await stack.client.put(
        f"{CREDS}/k", headers=_cookie(secret) | {"Origin": TEST_ORIGIN}, json=body
    )
    assert response.status_code == 200
    # Reads need no Origin; token-authenticated writes need none either.
    assert (await stack.client.get(CREDS, headers=_cookie(secret))).status_code == 200
    response = await stack.client.put(
        f"{CREDS}/k", headers=minted.bearer() | {"Origin": "https://evil.example"}, json=body
    )
    assert response.status_code == 200


async def test_a_token_minted_through_a_session_ends_with_it(stack: Stack) -> None:
    minted = await stack.mint("alice")
    _, secret = await _login(stack, minted)
    cookie_write = {**_cookie(secret), "Origin": TEST_ORIGIN}
    response = await stack.client.post(
        TOKENS, headers=cookie_write, json={"name": "from-the-ui", "expires_in": 30 * 86400}
    )
    assert response.status_code == 201, response.text
    created = response.json()["response"]
    child = {"Authorization": f"Bearer {created['token']}"}
    # It expires with the session (default 12 h), not in 30 days.
    expires_at = datetime.fromisoformat(created["expires_at"].replace("Z", "+00:00"))
    assert expires_at.timestamp() <= time.time() + 12 * 3600 + 5
    assert (await stack.client.get(CREDS, headers=child)).status_code == 200  # now cached

    response = await stack.client.delete(f"{SESSIONS}/current", headers=cookie_write)
    assert response.json() == {"response": {"revoked": True}}

    assert (await stack.client.get(CREDS, headers=child)).status_code == 401
    assert (await stack.client.get(CREDS, headers=minted.bearer())).status_code == 200
