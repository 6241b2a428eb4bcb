"""REST: a credential value with a leading or trailing space or tab is refused with 400 (one
value and replace-all), naming the key and not the value; nothing is written."""

from __future__ import annotations

import pytest

from tests.gateway.conftest import Stack

BASE = "/api/v2/users/me/ai-credentials"
SECRET = "sk-live-EDGE-0123456789abcdef"


@pytest.mark.parametrize("value", [SECRET + " ", " " + SECRET, SECRET + "\t", "\t" + SECRET])
async def test_edge_whitespace_is_400_and_nothing_is_written(stack: Stack, value: str) -> None:
    alice = await stack.mint("alice")
    one = await stack.client.put(f"{BASE}/k", headers=alice.bearer(), json={"value": value})
    whole = await stack.client.put(
        BASE, headers=alice.bearer(), json={"credentials": {"ok": "v", "k": value}}
    )
    for response in (one, whole):
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == "invalid_argument"
        assert "'k'" in error["message"] and SECRET not in response.text
    stored = await stack.client.get(BASE, headers=alice.bearer())
    assert stored.json() == {"response": {"credentials": {}}}
