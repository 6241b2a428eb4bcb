"""What a user does in the web UI, in Chromium, each result checked through the REST API too."""

from __future__ import annotations

import json
from pathlib import Path

from playwright.sync_api import expect

from tests.support.fake_upstream import FakeUpstream
from tests.support.stack import UiStack
from tests.ui.conftest import Browsing, api

CREDS = "/api/v2/users/me/ai-credentials"
OPENAI_KEY = "sk-ui-seed-" + "K" * 28
SECRET = "sk-ui-masked-" + "S" * 20 + "-tail"


def credential_map(stack: UiStack, token: str) -> dict[str, str]:
    with api(stack, token) as client:
        response = client.get(CREDS)
    assert response.status_code == 200, response.text
    result: dict[str, str] = response.json()["response"]["credentials"]
    return result


def put_credentials(stack: UiStack, token: str, credentials: dict[str, str]) -> None:
    with api(stack, token) as client:
        response = client.put(CREDS, json={"credentials": credentials})
    assert response.status_code == 200, response.text


def api_error_message(stack: UiStack, token: str, credentials: dict[str, str]) -> str:
    """The API's own message for a whole-map PUT it refuses (nothing is written)."""
    with api(stack, token) as client:
        response = client.put(CREDS, json={"credentials": credentials})
    assert response.status_code == 400, response.text
    message: str = response.json()["error"]["message"]
    return message


def test_seed_flow_provider_warning_then_manage_credentials_then_a_real_call(
    browsing: Browsing,
    stack: UiStack,
    new_user: str,
    upstream: FakeUpstream,
    artifacts: Path,
) -> None:
    page = browsing.page
    page.goto(stack.url + "/")
    expect(page).to_have_url(stack.url + "/ui/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.screenshot(path=artifacts / "sign-in.png")
    browsing.sign_in(new_user)
    expect(page.get_by_text("No providers yet")).to_be_visible()
    assert page.get_by_label("API token", exact=True).input_value() == "", "the token is forgotten"

    page.get_by_role("button", name="Add provider").click()
    form = page.get_by_role("form", name="New provider")
    form.get_by_label("Name", exact=True).fill("openai")
    form.get_by_label("Kind", exact=True).select_option("openai")
    form.get_by_label("Base URL", exact=True).fill(f"{upstream.origin}/v1")
    form.get_by_label("Models", exact=True).fill("gpt-4o, gpt-4o-mini")
    form.get_by_label("Header name").fill("Authorization")
    form.get_by_label("Header value").fill("Bearer {{credential:openai_api_key}}")
    form.get_by_role("button", name="Create provider").click()

    card = page.locator('[data-provider="openai"]')
    warning = card.locator(".warning", has_text="Credential not found: openai_api_key")
    expect(warning).to_be_visible()
    expect(card.get_by_text("Bearer {{credential:openai_api_key}}")).to_be_visible()
    page.screenshot(path=artifacts / "providers-warning.png", full_page=True)

    card.get_by_role("button", name="Manage credentials for openai").click()
    expect(page.get_by_role("tab", name="Credentials")).to_have_attribute("aria-selected", "true")
    adding = page.get_by_role("form", name="Add or update a credential")
    adding.get_by_label("Key", exact=True).fill("openai_api_key")
    adding.get_by_label("Value", exact=True).fill(OPENAI_KEY)
    adding.get_by_role("button", name="Save credential").click()
    row = page.locator('tr[data-key="openai_api_key"]')
    expect(row).to_contain_text("sk-...KKKK")  # masked: the first 3 and last 4 characters
    assert OPENAI_KEY not in page.content()
    page.screenshot(path=artifacts / "credentials.png", full_page=True)

    browsing.open_tab("AI providers")
    expect(card.get_by_text("openai_api_key", exact=True)).to_be_visible()
    expect(card.locator(".warning")).to_have_count(0)

    # The header editor offers the user's credential names after `{{credential:`.
    card.get_by_role("button", name="Edit openai").click()
    editing = page.get_by_role("form", name="Edit provider openai")
    value = editing.get_by_label("Header value")
    value.fill("")
    value.press_sequentially("Bearer {{credential:")
    listed = editing.locator("datalist option")
    expect(listed).to_have_count(1)
    assert listed.first.get_attribute("value") == "Bearer {{credential:openai_api_key}}"
    editing.get_by_role("button", name="Cancel").click()

    assert credential_map(stack, new_user) == {"openai_api_key": OPENAI_KEY}
    upstream.reset()
    with api(stack, new_user) as client:
        answer = client.post(
            "/v1/chat/completions",
            json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
        )
    assert answer.status_code == 200, answer.text
    assert "X-Credential-Warning" not in answer.headers
    assert upstream.last_request().header("authorization") == f"Bearer {OPENAI_KEY}"


def test_values_are_masked_until_revealed_and_never_stored_or_logged(
    browsing: Browsing, stack: UiStack, new_user: str
) -> None:
    put_credentials(stack, new_user, {"masked_key": SECRET, "short": "tiny-value"})
    page = browsing.page
    browsing.sign_in(new_user)
    browsing.open_tab("Credentials")
    row = page.locator('tr[data-key="masked_key"]')
    expect(row).to_contain_text("sk-")
    expect(row).to_contain_text("tail")
    expect(page.locator('tr[data-key="short"]')).to_contain_text("MASKED")
    assert SECRET not in page.content()
    assert "tiny-value" not in page.content()

    row.get_by_role("button", name="Reveal masked_key").click()
    expect(row.locator("code.revealed")).to_have_text(SECRET)
    expect(row.get_by_role("button", name="Reveal masked_key")).to_have_attribute(
        "aria-pressed", "true"
    )
    assert "tiny-value" not in page.content(), "only the revealed row is fetched"
    storage = page.evaluate(
        "() => JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage),"
        " document.cookie, location.href])"
    )
    assert SECRET not in storage and "sk-aic-" not in storage
    row.get_by_role("button", name="Reveal masked_key").click()  # hide again
    expect(row.locator("code.revealed")).to_have_count(0)
    assert SECRET not in page.content()
    assert not any(SECRET in line or new_user in line for line in browsing.console)
    assert SECRET not in page.url and new_user not in page.url


def test_invalid_key_or_value_shows_the_apis_message_and_changes_nothing(
    browsing: Browsing, stack: UiStack, new_user: str
) -> None:
    put_credentials(stack, new_user, {"kept": "kept-value"})
    page = browsing.page
    browsing.sign_in(new_user)
    browsing.open_tab("Credentials")
    adding = page.get_by_role("form", name="Add or update a credential")
    alerts = page.get_by_role("alert")

    # The form checks a key before it goes into a URL, in the API's exact words.
    adding.get_by_label("Key", exact=True).fill("bad key!")
    adding.get_by_label("Value", exact=True).fill("fine")
    adding.get_by_role("button", name="Save credential").click()
    key_message = api_error_message(stack, new_user, {"bad key!": "fine"})
    assert "'bad key!'" in key_message
    expect(alerts).to_contain_text(f"invalid_argument (HTTP 400): {key_message}")
    adding.get_by_label("Key", exact=True).fill("..")
    adding.get_by_role("button", name="Save credential").click()
    dots_message = api_error_message(stack, new_user, {"..": "fine"})
    expect(alerts).to_contain_text(f"invalid_argument (HTTP 400): {dots_message}")

    adding.get_by_label("Key", exact=True).fill("good_key")
    adding.get_by_label("Value", exact=True).fill("naïve")
    adding.get_by_role("button", name="Save credential").click()
    value_message = api_error_message(stack, new_user, {"good_key": "naïve"})
    expect(alerts).to_contain_text(f"invalid_argument (HTTP 400): {value_message}")

    adding.get_by_label("Value", exact=True).fill("")
    adding.get_by_role("button", name="Save credential").click()
    expect(alerts).to_contain_text(api_error_message(stack, new_user, {"good_key": ""}))

    # Editing a row: the masked value is not offered back; an illegal new value is refused.
    row = page.locator('tr[data-key="kept"]')
    row.get_by_role("button", name="Edit kept").click()
    new_value = row.get_by_label("New value for kept")
    assert new_value.input_value() == ""
    new_value.fill("line\u0007bell")
    row.get_by_role("button", name="Save").click()
    expect(alerts).to_contain_text(api_error_message(stack, new_user, {"kept": "line\u0007bell"}))
    assert credential_map(stack, new_user) == {"kept": "kept-value"}


def test_replace_all_with_a_preview_delete_one_and_delete_all(
    browsing: Browsing, stack: UiStack, new_user: str
) -> None:
    put_credentials(stack, new_user, {"alpha": "alpha-value", "beta": "beta-value"})
    page = browsing.page
    browsing.sign_in(new_user)
    browsing.open_tab("Credentials")
    expect(page.locator("tr[data-key]")).to_have_count(2)

    page.get_by_label("New credential map").fill("beta=beta-new\n# a comment\ngamma=gamma-value\n")
    page.get_by_role("button", name="Preview changes").click()
    preview = page.locator(".preview")
    expect(preview.locator(".added")).to_contain_text("Added (1)")
    expect(preview.locator(".added")).to_contain_text("gamma")
    expect(preview.locator(".changed")).to_contain_text("beta")
    expect(preview.locator(".removed")).to_contain_text("Removed (1)")
    expect(preview.locator(".removed")).to_contain_text("alpha")
    assert credential_map(stack, new_user) == {"alpha": "alpha-value", "beta": "beta-value"}
    assert "beta-new" not in preview.inner_text(), "the preview names keys, not values"
    page.get_by_role("button", name="Apply: replace the map").click()
    expect(page.locator("tr[data-key]")).to_have_count(2)
    assert credential_map(stack, new_user) == {"beta": "beta-new", "gamma": "gamma-value"}

    # JSON works too, and a bad key in it is the API's error with nothing written.
    page.get_by_label("New credential map").fill(json.dumps({"ok": "v", "bad key": "v"}))
    page.get_by_role("button", name="Preview changes").click()
    page.get_by_role("button", name="Apply: replace the map").click()
    expect(page.get_by_role("alert")).to_contain_text(
        api_error_message(stack, new_user, {"ok": "v", "bad key": "v"})
    )
    assert credential_map(stack, new_user) == {"beta": "beta-new", "gamma": "gamma-value"}

    page.locator('tr[data-key="gamma"]').get_by_role("button", name="Delete gamma").click()
    expect(page.locator("tr[data-key]")).to_have_count(1)
    assert credential_map(stack, new_user) == {"beta": "beta-new"}

    page.get_by_role("button", name="Delete all…").click()
    confirm = page.get_by_role("group", name="Confirm deleting all credentials")
    expect(confirm).to_contain_text("Delete all 1 credentials?")
    confirm.get_by_role("button", name="Cancel").click()
    assert credential_map(stack, new_user) == {"beta": "beta-new"}
    page.get_by_role("button", name="Delete all…").click()
    confirm.get_by_role("button", name="Yes, delete every credential").click()
    expect(page.get_by_text("No credentials yet.")).to_be_visible()
    assert credential_map(stack, new_user) == {}


def test_a_new_token_is_shown_once_and_a_revoked_one_gets_401(
    browsing: Browsing, stack: UiStack, new_user: str, artifacts: Path
) -> None:
    page = browsing.page
    browsing.sign_in(new_user)
    browsing.open_tab("API tokens")
    form = page.get_by_role("form", name="Create a token")
    form.get_by_label("Name", exact=True).fill("laptop")
    form.get_by_label("tokens:manage").uncheck()
    form.get_by_label("Expires").select_option(label="30 days")
    form.get_by_role("button", name="Create token").click()
    shown = page.get_by_label("New token laptop")
    expect(shown).to_be_visible()
    token = shown.input_value()
    assert token.startswith("sk-aic-")
    row = page.locator("tr", has_text="laptop")
    expect(row).to_contain_text(token[:8])
    expect(row).not_to_contain_text("tokens:manage")
    page.screenshot(path=artifacts / "tokens.png", full_page=True)
    with api(stack, token) as client:
        assert client.get(CREDS).status_code == 200

    page.get_by_role("button", name="Done, I have stored it").click()
    expect(shown).to_have_count(0)
    assert token not in page.content()
    row.get_by_role("button", name="Revoke laptop").click()
    expect(row).to_contain_text("revoked")
    with api(stack, token) as client:
        assert client.get(CREDS).status_code == 401
