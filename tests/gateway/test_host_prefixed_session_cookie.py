"""With `Secure` (the default) the session cookie is `__Host-aicreds_session` with `Path=/` and
no `Domain`, so no sibling subdomain or plain-http page can set or shadow it; local http
(GATEWAY_COOKIE_SECURE=false) uses the plain `aicreds_session`, which browsers accept there.
Only the name in force is read."""

from __future__ import annotations

from http.cookies import SimpleCookie

import pytest

from tests.gateway.conftest import TEST_ORIGIN, StackFactory

SESSIONS = "/api/v2/sessions"
CREDS = "/api/v2/users/me/ai-credentials"


@pytest.mark.parametrize(
    ("secure", "name", "other"),
    [(True, "__Host-aicreds_session", "aicreds_session"), (False, "aicreds_session", None)],
)
async def test_the_session_cookie_name_follows_secure(
    gateway_stack: StackFactory, secure: bool, name: str, other: str | None
) -> None:
    stack = await gateway_stack(cookie_secure=secure)
    minted = await stack.mint("alice")
    login = await stack.client.post(SESSIONS, headers=minted.bearer())
    assert login.status_code == 201, login.text
    set_cookie = login.headers["set-cookie"]
    jar: SimpleCookie = SimpleCookie()
    jar.load(set_cookie)
    assert list(jar) == [name]
    attributes = [part.strip().lower() for part in set_cookie.split(";")]
    assert "path=/" in attributes
    assert not any(a.startswith("domain") for a in attributes)
    assert ("secure" in attributes) is secure
    session = jar[name].value
    stack.client.cookies.clear()

    # The name in force authenticates.
    read = await stack.client.get(CREDS, headers={"Cookie": f"{name}={session}"})
    assert read.status_code == 200, read.text
    # The other name is not read at all.
    if other is not None:
        unread = await stack.client.get(CREDS, headers={"Cookie": f"{other}={session}"})
        assert unread.status_code == 401

    # Logging out expires the cookie by the same name.
    out = await stack.client.delete(
        f"{SESSIONS}/current", headers={"Cookie": f"{name}={session}", "Origin": TEST_ORIGIN}
    )
    assert out.status_code == 200, out.text
    expired: SimpleCookie = SimpleCookie()
    expired.load(out.headers["set-cookie"])
    assert list(expired) == [name] and expired[name]["max-age"] == "0"

    document = (await stack.client.get("/openapi.json")).json()
    assert document["components"]["securitySchemes"]["session"]["name"] == name
