"""`GET /api/v2/users/me/activity` against the real vault, with events made through the API:
newest first, key names but never values, the token's user only, paging, bad parameters."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.support.stack import Minted, Stack

ACTIVITY = "/api/v2/users/me/activity"
CREDS = "/api/v2/users/me/ai-credentials"
SECRET = "sk-activity-" + "V" * 24 + "-never-listed"
BOB_SECRET = "sk-bob-" + "B" * 24


async def events_of(stack: Stack, who: Minted, query: str = "") -> list[dict[str, Any]]:
    response = await stack.client.get(ACTIVITY + query, headers=who.bearer())
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["response"]["events"]
    return events


@pytest.fixture
async def alice(stack: Stack) -> Minted:
    token = await stack.mint("alice")
    for key, value in [("openai_api_key", SECRET), ("org_id", SECRET + "-org")]:
        response = await stack.client.put(
            f"{CREDS}/{key}", headers=token.bearer(), json={"value": value}
        )
        assert response.status_code == 200, response.text
    response = await stack.client.delete(f"{CREDS}/org_id", headers=token.bearer())
    assert response.status_code == 200
    return token


async def test_the_users_changes_newest_first_with_keys_never_values(
    stack: Stack, alice: Minted
) -> None:
    bob = await stack.mint("bob")
    await stack.client.put(
        f"{CREDS}/bob_only_key", headers=bob.bearer(), json={"value": BOB_SECRET}
    )

    response = await stack.client.get(ACTIVITY, headers=alice.bearer())
    assert response.status_code == 200, response.text
    assert SECRET not in response.text and BOB_SECRET not in response.text
    events = response.json()["response"]["events"]
    ids = [event["id"] for event in events]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == len(ids)
    changes = [
        (event["action"], event["keys"], event["outcome"])
        for event in events
        if event["action"].startswith("credentials.")
    ]
    assert changes[:3] == [
        ("credentials.delete", ["org_id"], "ok"),
        ("credentials.put", ["org_id"], "ok"),
        ("credentials.put", ["openai_api_key"], "ok"),
    ]
    for event in events:
        assert set(event) == {"id", "time", "action", "keys", "outcome", "caller"}
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", event["time"])
        assert event["caller"] == "gateway"
        assert "bob_only_key" not in event["keys"]

    bobs = await events_of(stack, bob)
    assert {tuple(e["keys"]) for e in bobs if e["action"].startswith("credentials.")} == {
        ("bob_only_key",)
    }


async def test_the_user_is_the_tokens_whatever_the_query_says(stack: Stack, alice: Minted) -> None:
    bob = await stack.mint("bob")
    seen = await events_of(stack, bob, "?user_id=alice")
    assert all("openai_api_key" not in event["keys"] for event in seen)


async def test_limit_and_before_id_page_back(stack: Stack, alice: Minted) -> None:
    everything = await events_of(stack, alice, "?limit=200")
    assert len(everything) >= 3
    first = await events_of(stack, alice, "?limit=2")
    assert first == everything[:2]
    second = await events_of(stack, alice, f"?limit=2&before_id={first[-1]['id']}")
    assert second == everything[2:4]
    assert await events_of(stack, alice) == everything[:50]
    assert await events_of(stack, alice, f"?before_id={everything[-1]['id']}") == []


@pytest.mark.parametrize(
    "query",
    ["?limit=0", "?limit=201", "?limit=abc", "?limit=-1", "?limit=1.5", "?limit=", "?before_id=0"],
)
async def test_bad_paging_parameters_are_400(stack: Stack, query: str) -> None:
    alice = await stack.mint("alice")
    response = await stack.client.get(ACTIVITY + query, headers=alice.bearer())
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_argument"


async def test_it_needs_credentials_read(stack: Stack) -> None:
    narrow = await stack.mint("alice", ["providers:read"])
    response = await stack.client.get(ACTIVITY, headers=narrow.bearer())
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"
