"""REST: a provider base_url with a query is refused with 400 at create and update, the
response never repeats the query, nothing is written and nothing is logged with it."""

from __future__ import annotations

import logging

import pytest

from tests.gateway.conftest import Stack

PROVIDERS = "/api/v2/users/me/ai-providers"
SECRET = "sk-live-QUERYSECRET-0123456789"
PROVIDER = {"name": "p", "kind": "custom", "base_url": "https://api.example.com/v1"}


async def test_a_query_in_base_url_is_400_and_never_stored_or_logged(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    alice = await stack.mint("alice")
    with_query = {**PROVIDER, "base_url": f"https://api.example.com/v1?key={SECRET}"}
    created = await stack.client.post(PROVIDERS, headers=alice.bearer(), json=with_query)
    assert created.status_code == 400, created.text
    assert created.json()["error"]["code"] == "invalid_argument"
    assert "query" in created.json()["error"]["message"] and SECRET not in created.text

    assert (await stack.client.post(PROVIDERS, headers=alice.bearer(), json=PROVIDER)).is_success
    updated = await stack.client.put(f"{PROVIDERS}/p", headers=alice.bearer(), json=with_query)
    assert updated.status_code == 400 and SECRET not in updated.text
    listed = await stack.client.get(PROVIDERS, headers=alice.bearer())
    assert SECRET not in listed.text
    assert listed.json()["response"]["providers"][0]["base_url"] == PROVIDER["base_url"]
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert SECRET not in logged
