"""The Test button and the Activity tab against the real stack (no `page.route` interception).

NOTE — the Test-button tests here (`test_test_shows_accepted_then_key_rejected`,
`test_test_of_a_private_address_is_refused_by_policy`) need the router's `CheckProvider`. Until
it is implemented the router refuses the RPC (not in its rights table: the gateway answers 500;
or UNIMPLEMENTED: 501), and each of these tests fails at once with a message saying so
(`require_check_provider`); they pass once the router's side lands. The Activity test needs
only the vault and passes without it.

The fake upstream checks the key on `GET /v1/models` (`models_key`), the request a provider test
sends. The router connects through a loopback-only backend, so nothing leaves 127.0.0.0/8.
"""

from __future__ import annotations

import pytest
from aicreds.vault.v1 import providers_pb2, providers_pb2_grpc
from playwright.sync_api import expect

from tests.support.background import BackgroundLoop
from tests.support.fake_upstream import FakeUpstream
from tests.support.stack import UiStack
from tests.ui.conftest import Browsing, api

PROVIDERS = "/api/v2/users/me/ai-providers"
CREDS = "/api/v2/users/me/ai-credentials"
GOOD_KEY = "sk-ui-check-good-" + "G" * 24
WRONG_KEY = "sk-ui-check-wrong-" + "W" * 24
FIRST = "sk-ui-activity-one-" + "1" * 20
SECOND = "sk-ui-activity-two-" + "2" * 20
OTHER = "sk-ui-activity-org-" + "3" * 20
BEARER = {"Authorization": ["Bearer {{credential:openai_api_key}}"]}


def require_check_provider(stack: UiStack, token: str, name: str) -> None:
    """Fail with the reason when the router does not implement CheckProvider yet.

    A router without it refuses the call in its caller-auth interceptor (the RPC is not in its
    rights table: PERMISSION_DENIED, which the gateway answers as 500 "the gateway is not
    authorized at the router"), or, with the RPC listed but not implemented, UNIMPLEMENTED (501).
    """
    with api(stack, token) as client:
        response = client.post(f"{PROVIDERS}/{name}/test", json={})
    unimplemented = response.status_code == 501 or (
        response.status_code == 500 and "not authorized at the router" in response.text
    )
    if unimplemented:
        pytest.fail(
            "the router does not implement CheckProvider yet (the gateway answers "
            f"{response.status_code} {response.text}); this test passes once it does",
            pytrace=False,
        )
    assert response.status_code == 200, response.text


def put_credential(stack: UiStack, token: str, key: str, value: str) -> None:
    with api(stack, token) as client:
        response = client.put(f"{CREDS}/{key}", json={"value": value})
    assert response.status_code == 200, response.text


def test_test_shows_accepted_then_key_rejected(
    browsing: Browsing, stack: UiStack, new_user: str, upstream: FakeUpstream
) -> None:
    upstream.reset()
    upstream.models_key = GOOD_KEY
    with api(stack, new_user) as client:
        created = client.post(
            PROVIDERS,
            json={
                "name": "openai",
                "kind": "openai",
                "base_url": f"{upstream.origin}/v1",
                "headers": BEARER,
                "models": ["gpt-4o"],
            },
        )
    assert created.status_code == 201, created.text
    put_credential(stack, new_user, "openai_api_key", GOOD_KEY)
    require_check_provider(stack, new_user, "openai")

    page = browsing.page
    browsing.sign_in(new_user)
    card = page.locator('[data-provider="openai"]')
    outcome = card.locator(".test-result")
    card.get_by_role("button", name="Test openai").click()
    expect(outcome.locator(".badge")).to_have_text("Accepted")
    expect(outcome).to_contain_text("HTTP 200")
    expect(outcome).to_contain_text("checked at")
    sent = upstream.last_request()
    assert (sent.method, sent.path) == ("GET", "/v1/models")
    assert sent.header("authorization") == f"Bearer {GOOD_KEY}"

    put_credential(stack, new_user, "openai_api_key", WRONG_KEY)
    card.get_by_role("button", name="Test openai").click()
    expect(outcome.locator(".badge")).to_have_text("Key rejected")
    expect(outcome).to_contain_text("HTTP 401")
    assert upstream.last_request().header("authorization") == f"Bearer {WRONG_KEY}"
    content = page.content()
    assert "Incorrect API key provided" not in content, "the upstream's body is never shown"
    assert GOOD_KEY not in content and WRONG_KEY not in content


def test_test_of_a_private_address_is_refused_by_policy(
    browsing: Browsing, stack: UiStack, servers: BackgroundLoop, upstream: FakeUpstream
) -> None:
    # Saving through the API refuses a private base_url (CheckUpstream); a provider can still
    # point at one when it was saved under a wider ROUTER_EGRESS_ALLOW, so write it to the vault.
    user = "u-refused-by-policy"
    token = servers.run(stack.mint(user))
    provider = providers_pb2.Provider(
        name="internal",
        kind=providers_pb2.PROVIDER_KIND_OPENAI,
        base_url="http://10.0.0.1/v1",
        headers={"Authorization": providers_pb2.HeaderValues(values=BEARER["Authorization"])},
        models=["gpt-4o"],
    )

    async def create() -> None:
        stub = providers_pb2_grpc.ProviderServiceStub(stack.llm.vault.channel("gateway"))
        request = providers_pb2.CreateProviderRequest(user_id=user, provider=provider)
        await stub.CreateProvider(request, timeout=5)

    servers.run(create())
    put_credential(stack, token, "openai_api_key", GOOD_KEY)
    upstream.reset()
    require_check_provider(stack, token, "internal")

    page = browsing.page
    browsing.sign_in(token)
    card = page.locator('[data-provider="internal"]')
    card.get_by_role("button", name="Test internal").click()
    outcome = card.locator(".test-result")
    expect(outcome.locator(".badge")).to_have_text("Refused by policy")
    expect(outcome).not_to_contain_text("HTTP ")  # nothing answered: status 0 is not shown
    assert upstream.requests == []


def test_activity_lists_the_credential_changes_with_keys_never_values(
    browsing: Browsing, stack: UiStack, new_user: str
) -> None:
    page = browsing.page
    browsing.sign_in(new_user)
    browsing.open_tab("Credentials")
    adding = page.get_by_role("form", name="Add or update a credential")
    for key, value, masked in [
        ("openai_api_key", FIRST, "sk-...1111"),
        ("org_id", OTHER, "sk-...3333"),
        ("openai_api_key", SECOND, "sk-...2222"),
    ]:
        adding.get_by_label("Key", exact=True).fill(key)
        adding.get_by_label("Value", exact=True).fill(value)
        adding.get_by_role("button", name="Save credential").click()
        expect(page.locator(f'tr[data-key="{key}"]')).to_contain_text(masked)

    browsing.open_tab("Activity")
    puts = page.locator(".activity tbody tr", has_text="credentials.put")
    expect(puts).to_have_count(3)
    # Newest first: the update of openai_api_key, then org_id, then the first put.
    expect(puts.nth(0)).to_contain_text("openai_api_key")
    expect(puts.nth(1)).to_contain_text("org_id")
    expect(puts.nth(2)).to_contain_text("openai_api_key")
    for row in range(3):
        expect(puts.nth(row)).to_contain_text("ok")
        expect(puts.nth(row)).to_contain_text("gateway")

    page.get_by_role("button", name="Refresh").click()
    expect(puts).to_have_count(3)
    content = page.content()
    for value in (FIRST, SECOND, OTHER):
        assert value not in content
