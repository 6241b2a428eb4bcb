"""Saving a provider whose base_url's host resolves to a refused address: 400 `egress_denied`
naming the host and the category, never the address the name resolved to."""

from __future__ import annotations

from tests.gateway.conftest import Stack

PROVIDERS = "/api/v2/users/me/ai-providers"


async def test_provider_save_error_has_no_resolved_address(stack: Stack) -> None:
    alice = await stack.mint("alice")
    # The gateway tests' stub DNS answers 10.1.2.3 for llm.internal.test.
    provider = {"name": "internal", "kind": "custom", "base_url": "https://llm.internal.test/v1"}
    for response in (
        await stack.client.post(PROVIDERS, headers=alice.bearer(), json=provider),
        await stack.client.put(f"{PROVIDERS}/internal", headers=alice.bearer(), json=provider),
    ):
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "egress_denied"
        assert "llm.internal.test" in error["message"]
        assert "private address" in error["message"]
        assert "10.1.2.3" not in response.text
