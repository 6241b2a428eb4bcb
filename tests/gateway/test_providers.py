"""SPEC 2.3 over HTTP: provider CRUD, masking by the vault, warnings, errors, isolation, and
the router's egress check of `base_url` when a provider is saved."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.loopback_backend import LoopbackOnlyBackend
from tests.support.stack import (
    Minted,
    Stack,
    StackFactory,
    running_router,
    unused_address,
)
from tests.support.vault import VaultHandle

PROVIDERS = "/api/v2/users/me/ai-providers"

OPENAI = {
    "name": "openai",
    "kind": "openai",
    "base_url": "https://api.openai.com/v1",
    "headers": {"Authorization": ["Bearer {{credential:openai_api_key}}"]},
    "models": ["gpt-4o", "gpt-4"],
    "on_missing_credential": "error",
}


@pytest.fixture
async def alice(stack: Stack) -> Minted:
    return await stack.mint("alice")


async def test_crud(stack: Stack, alice: Minted) -> None:
    response = await stack.client.post(PROVIDERS, headers=alice.bearer(), json=OPENAI)
    assert response.status_code == 201, response.text
    assert response.json() == {"response": {"provider": OPENAI, "warnings": []}}

    response = await stack.client.get(f"{PROVIDERS}/openai", headers=alice.bearer())
    assert response.json()["response"]["provider"] == OPENAI

    anthropic = {
        "name": "claude",
        "kind": "anthropic",
        "base_url": "https://api.anthropic.com",
        "headers": {"X-API-Key": ["{{credential:anthropic_api_key}}"]},
        "models": ["claude-3.5-sonnet"],
    }
    response = await stack.client.post(PROVIDERS, headers=alice.bearer(), json=anthropic)
    assert response.status_code == 201
    assert response.json()["response"]["provider"]["on_missing_credential"] == "warn"

    listed = (await stack.client.get(PROVIDERS, headers=alice.bearer())).json()
    assert [p["name"] for p in listed["response"]["providers"]] == ["claude", "openai"]

    updated = {**OPENAI, "models": ["gpt-4o-mini"], "kind": "custom"}
    del updated["name"]
    response = await stack.client.put(f"{PROVIDERS}/openai", headers=alice.bearer(), json=updated)
    assert response.status_code == 200
    provider = response.json()["response"]["provider"]
    assert provider["name"] == "openai" and provider["models"] == ["gpt-4o-mini"]
    assert provider["kind"] == "custom"

    response = await stack.client.delete(f"{PROVIDERS}/openai", headers=alice.bearer())
    assert response.json() == {"response": {"name": "openai"}}
    response = await stack.client.get(f"{PROVIDERS}/openai", headers=alice.bearer())
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "provider_not_found"


async def test_duplicate_name_is_409(stack: Stack, alice: Minted) -> None:
    await stack.client.post(PROVIDERS, headers=alice.bearer(), json=OPENAI)
    response = await stack.client.post(PROVIDERS, headers=alice.bearer(), json=OPENAI)
    assert response.status_code == 409
    assert response.json()["error"]["code"] != "internal"


async def test_literal_secret_is_masked_and_warned(stack: Stack, alice: Minted) -> None:
    literal = {
        **OPENAI,
        "name": "literal",
        "headers": {
            "Authorization": ["Bearer sk-literal-secret-1234567890"],
            "X-Trace": ["plain"],
        },
    }
    response = await stack.client.post(PROVIDERS, headers=alice.bearer(), json=literal)
    assert response.status_code == 201
    body = response.json()["response"]
    assert body["provider"]["headers"]["Authorization"] == ["MASKED"]
    assert body["provider"]["headers"]["X-Trace"] == ["plain"]
    assert any("Authorization" in w and "literal secret" in w for w in body["warnings"])
    assert "sk-literal-secret" not in response.text
    for path in (PROVIDERS, f"{PROVIDERS}/literal"):
        response = await stack.client.get(path, headers=alice.bearer())
        assert "sk-literal-secret" not in response.text
        assert "MASKED" in response.text


@pytest.mark.parametrize(
    "body",
    [
        {**OPENAI, "kind": "gemini"},
        {**OPENAI, "on_missing_credential": "ignore"},
        # Only a missing or null field takes the default: "" once became `warn` silently.
        {**OPENAI, "on_missing_credential": ""},
        {**OPENAI, "on_missing_credential": "WARN"},
        # base_url in full (`provider_rules.base_url_problem`), before the router is asked.
        {**OPENAI, "base_url": "https://user:SECRET@api.example.com/v1"},
        {**OPENAI, "base_url": "https://api.example.com/v1#frag"},
        {**OPENAI, "base_url": "https:///v1"},
        {**OPENAI, "base_url": "ftp://example.com"},
        {**OPENAI, "headers": {"Authorization": "Bearer x"}},
        {**OPENAI, "models": "gpt-4"},
        {key: value for key, value in OPENAI.items() if key != "kind"},
        {key: value for key, value in OPENAI.items() if key != "name"},
        {**OPENAI, "colour": "blue"},
    ],
)
async def test_invalid_providers_are_400(stack: Stack, alice: Minted, body: object) -> None:
    response = await stack.client.post(PROVIDERS, headers=alice.bearer(), json=body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_argument"
    assert (await stack.client.get(PROVIDERS, headers=alice.bearer())).json() == {
        "response": {"providers": []}
    }


async def test_a_null_on_missing_credential_is_the_default(stack: Stack, alice: Minted) -> None:
    body = {**OPENAI, "on_missing_credential": None}
    response = await stack.client.post(PROVIDERS, headers=alice.bearer(), json=body)
    assert response.status_code == 201, response.text
    assert response.json()["response"]["provider"]["on_missing_credential"] == "warn"


async def test_path_and_body_names_must_agree(stack: Stack, alice: Minted) -> None:
    await stack.client.post(PROVIDERS, headers=alice.bearer(), json=OPENAI)
    response = await stack.client.put(
        f"{PROVIDERS}/openai", headers=alice.bearer(), json={**OPENAI, "name": "other"}
    )
    assert response.status_code == 400


async def test_users_cannot_see_or_change_each_others_providers(stack: Stack) -> None:
    alice = await stack.mint("alice")
    bob = await stack.mint("bob")
    await stack.client.post(PROVIDERS, headers=alice.bearer(), json=OPENAI)
    assert (await stack.client.get(PROVIDERS, headers=bob.bearer())).json() == {
        "response": {"providers": []}
    }
    for method in ("GET", "DELETE"):
        response = await stack.client.request(method, f"{PROVIDERS}/openai", headers=bob.bearer())
        assert response.status_code == 404
    response = await stack.client.put(f"{PROVIDERS}/openai", headers=bob.bearer(), json=OPENAI)
    assert response.status_code == 404
    # Bob may have his own provider of the same name.
    response = await stack.client.post(PROVIDERS, headers=bob.bearer(), json=OPENAI)
    assert response.status_code == 201
    response = await stack.client.get(f"{PROVIDERS}/openai", headers=alice.bearer())
    assert response.json()["response"]["provider"] == OPENAI


# -- SPEC 2.3: base_url is checked against the router's egress policy (3.4) when saved ----------


async def _saved(stack: Stack, alice: Minted) -> list[dict[str, object]]:
    listed = (await stack.client.get(PROVIDERS, headers=alice.bearer())).json()
    providers: list[dict[str, object]] = listed["response"]["providers"]
    return providers


@pytest.mark.parametrize(
    ("base_url", "named", "category"),
    [
        ("http://127.0.0.1:8080/v1", "127.0.0.1", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254", "link-local"),
        ("http://10.0.0.1/v1", "10.0.0.1", "private"),
        ("http://[::1]:8080/v1", "::1", "loopback"),
        ("https://llm.internal.test/v1", "llm.internal.test", "private"),
    ],
)
async def test_a_forbidden_base_url_is_refused_and_nothing_written(
    stack: Stack, alice: Minted, base_url: str, named: str, category: str
) -> None:
    # The stack's router runs with the default policy: no ROUTER_EGRESS_ALLOW.
    response = await stack.client.post(
        PROVIDERS, headers=alice.bearer(), json={**OPENAI, "base_url": base_url}
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "egress_denied"
    assert named in error["message"] and category in error["message"]
    assert await _saved(stack, alice) == []

    # An update to such a URL changes nothing either.
    assert (await stack.client.post(PROVIDERS, headers=alice.bearer(), json=OPENAI)).is_success
    response = await stack.client.put(
        f"{PROVIDERS}/openai", headers=alice.bearer(), json={**OPENAI, "base_url": base_url}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "egress_denied"
    assert await _saved(stack, alice) == [OPENAI]


async def test_loopback_is_allowed_with_the_routers_allowlist(
    tmp_path: Path, vault: VaultHandle, gateway_stack: StackFactory
) -> None:
    network = LoopbackOnlyBackend()
    async with running_router(tmp_path, vault, egress_allow="127.0.0.1", network=network) as router:
        stack = await gateway_stack(router_addr=router.address)
        alice = await stack.mint("alice")
        local = {**OPENAI, "base_url": "http://127.0.0.1:8080/v1"}
        response = await stack.client.post(PROVIDERS, headers=alice.bearer(), json=local)
        assert response.status_code == 201, response.text
        assert response.json()["response"] == {"provider": local, "warnings": []}
        # ::1 stays refused: the allowlist opens 127.0.0.1 only.
        response = await stack.client.put(
            f"{PROVIDERS}/openai",
            headers=alice.bearer(),
            json={**OPENAI, "base_url": "http://[::1]:8080/v1"},
        )
        assert response.json()["error"]["code"] == "egress_denied"
    # Checking sends nothing anywhere, not even to the allowed address.
    assert network.connects == []


async def test_a_host_that_does_not_resolve_is_saved_with_a_warning(
    stack: Stack, alice: Minted
) -> None:
    # Every call resolves and checks the name again; refusing it now would refuse a provider
    # only because DNS is down, or the name not yet published.
    elsewhere = {**OPENAI, "base_url": "https://not-yet.example.net/v1"}
    response = await stack.client.post(PROVIDERS, headers=alice.bearer(), json=elsewhere)
    assert response.status_code == 201
    assert response.json()["response"]["warnings"] == [
        "base_url's host does not resolve now; calls fail until it does"
    ]


async def test_without_the_router_nothing_is_saved(gateway_stack: StackFactory) -> None:
    stack = await gateway_stack(router_addr=unused_address())
    alice = await stack.mint("alice")
    response = await stack.client.post(PROVIDERS, headers=alice.bearer(), json=OPENAI)
    assert response.status_code == 503
    assert response.json()["error"] == {"code": "unavailable", "message": "router is unavailable"}
    assert await _saved(stack, alice) == []
    response = await stack.client.put(f"{PROVIDERS}/openai", headers=alice.bearer(), json=OPENAI)
    assert response.status_code == 503
    assert await _saved(stack, alice) == []
    # Reading and deleting need no router.
    assert (
        await stack.client.get(f"{PROVIDERS}/openai", headers=alice.bearer())
    ).status_code == 404
