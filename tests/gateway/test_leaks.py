"""No token, session or credential value in any log record of a run, nor in responses that are
not the owner's own credential reads."""

from __future__ import annotations

import logging
from http.cookies import SimpleCookie

import pytest

from services.common.logging import JsonFormatter
from services.gateway.auth import SESSION_COOKIE
from tests.support.stack import TEST_ORIGIN, Stack, StackFactory

CREDS = "/api/v2/users/me/ai-credentials"
VALUE = "sk-leakcheck-VALUE-0123456789abcdef"
OTHER_VALUE = "sk-leakcheck-OTHER-9876543210fedcba"
LITERAL = "sk-leakcheck-LITERAL-00112233445566"
BAD_VALUE = "sk-leakcheck-BAD\r\nInjected: yes"


# The test's own HTTP client traces the responses it receives; that is not the services' log.
_CLIENT_LOGGERS = ("httpx", "httpcore")


def _all_text(records: list[logging.LogRecord]) -> str:
    formatter = JsonFormatter("test")
    lines = []
    for record in records:
        if record.name.startswith(_CLIENT_LOGGERS):
            continue
        lines.append(formatter.format(record))
        lines.append(repr(record.args))
        lines.append(repr(getattr(record, "fields", None)))
    return "\n".join(lines)


async def test_no_secret_in_logs_or_foreign_responses(
    gateway_stack: StackFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    stack: Stack = await gateway_stack(cookie_secure=False, rate_burst=1000)
    minted = await stack.mint("alice")
    auth = minted.bearer()
    responses = []

    async def call(method: str, path: str, owner_read: bool = False, **kwargs: object) -> None:
        response = await stack.client.request(method, path, **kwargs)  # type: ignore[arg-type]
        responses.append((method, path, owner_read, response))

    debug = {"X-Debug-Auth": "true"}
    await call("PUT", CREDS, True, headers=auth | debug, json={"credentials": {"openai": VALUE}})
    await call("PUT", f"{CREDS}/other", True, headers=auth, json={"value": OTHER_VALUE})
    await call("PUT", f"{CREDS}/bad", headers=auth, json={"value": BAD_VALUE})
    await call("PUT", CREDS, headers=auth, json={"credentials": {"bad key": VALUE}})
    await call("GET", CREDS, headers=auth | debug, params={"masked": "true"})
    await call("GET", f"{CREDS}/openai", True, headers={"x-api-key": minted.token} | debug)
    await call("GET", f"{CREDS}/missing", headers=auth)
    await call(
        "POST",
        "/api/v2/users/me/ai-providers",
        headers=auth,
        json={
            "name": "leaky",
            "kind": "custom",
            "base_url": "https://api.example.com",
            "headers": {"Authorization": [f"Bearer {LITERAL}"]},
        },
    )
    await call("GET", "/api/v2/users/me/ai-providers", headers=auth)
    await call("GET", CREDS, headers={"Authorization": f"Bearer {minted.token}x"} | debug)
    await call("GET", CREDS, headers={"Authorization": f"Token {minted.token}"} | debug)
    created = await stack.client.post(
        "/api/v2/users/me/api-tokens", headers=auth, json={"name": "second"}
    )
    second = created.json()["response"]["token"]
    await call("GET", "/api/v2/users/me/api-tokens", headers={"x-api-key": second})
    login = await stack.client.post("/api/v2/sessions", headers=auth)
    cookie = SimpleCookie()
    cookie.load(login.headers["set-cookie"])
    session = cookie[SESSION_COOKIE].value
    stack.client.cookies.clear()
    session_headers = {"Cookie": f"{SESSION_COOKIE}={session}"}
    await call("GET", CREDS, True, headers=session_headers | debug)
    await call("PUT", f"{CREDS}/x", headers=session_headers | {"Origin": "https://evil"}, json={})
    await call(
        "DELETE", "/api/v2/sessions/current", headers=session_headers | {"Origin": TEST_ORIGIN}
    )
    await call("GET", CREDS, headers=session_headers | debug)
    await call("DELETE", f"/api/v2/users/me/api-tokens/{minted.id}", headers=auth)
    await call("GET", CREDS, headers=auth | debug)
    await call("GET", "/metrics")

    secrets = {
        "token": minted.token,
        "second token": second,
        "session": session,
        "value": VALUE,
        "other value": OTHER_VALUE,
        "literal": LITERAL,
        "bad value": BAD_VALUE.split("\r")[0],
    }
    logged = _all_text(caplog.records)
    assert any(r.name == "aicreds.gateway.access" for r in caplog.records)
    for name, secret in secrets.items():
        assert secret not in logged, f"{name} appears in a log record"
        assert secret[:12] not in logged, f"a 12-character piece of the {name} is logged"

    for method, path, owner_read, response in responses:
        text = response.text + repr(sorted(response.headers.items()))
        for name, secret in secrets.items():
            if name in ("value", "other value") and owner_read:
                continue
            assert secret not in text, f"{name} in the response to {method} {path}"
            if name in ("token", "second token", "session"):
                for start in range(len(secret) - 11):
                    assert secret[start : start + 12] not in text, (name, method, path)
