"""Binding a credential to hosts in the web UI (Chromium), each result checked via REST."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playwright.sync_api import expect

from tests.support.fake_upstream import FakeUpstream
from tests.support.stack import UiStack
from tests.ui.conftest import Browsing, api

ME = "/api/v2/users/me"
SECRET = "sk-ui-hosts-" + "H" * 24 + "-tail"
KEY = "up_key"


def setup(
    stack: UiStack, token: str, upstream: FakeUpstream, hosts: list[str] | None = None
) -> str:
    """A credential, a provider at the fake upstream that uses it, and another that does not.

    Returns the pattern naming the upstream's origin (`127.0.0.1:<port>`).
    """
    with api(stack, token) as client:
        answer = client.put(
            f"{ME}/ai-credentials", json={"credentials": {KEY: SECRET, "other": "o-value"}}
        )
        assert answer.status_code == 200, answer.text
        for name, key, base_url in (
            ("local", KEY, f"{upstream.origin}/v1"),
            ("elsewhere", "other", "https://api.example.com/v1"),
        ):
            answer = client.post(
                f"{ME}/ai-providers",
                json={
                    "name": name,
                    "kind": "openai",
                    "base_url": base_url,
                    "headers": {"Authorization": [f"Bearer {{{{credential:{key}}}}}"]},
                    "models": [f"{name}-model"],
                },
            )
            assert answer.status_code in (200, 201), answer.text
        if hosts is not None:
            put_hosts(stack, token, hosts)
    return upstream.origin.removeprefix("http://")


def put_hosts(stack: UiStack, token: str, hosts: list[str]) -> Any:
    with api(stack, token) as client:
        return client.put(f"{ME}/ai-credentials/{KEY}/hosts", json={"hosts": hosts})


def stored_hosts(stack: UiStack, token: str) -> list[str]:
    with api(stack, token) as client:
        answer = client.get(f"{ME}/ai-credentials/{KEY}/hosts")
        listed = client.get(f"{ME}/ai-credential-hosts")
    assert answer.status_code == 200 and listed.status_code == 200, (answer.text, listed.text)
    hosts: list[str] = answer.json()["response"]["hosts"]
    assert listed.json()["response"]["hosts"].get(KEY, []) == hosts
    return hosts


def test_bind_with_a_provider_suggestion_then_unbind(
    browsing: Browsing, stack: UiStack, new_user: str, upstream: FakeUpstream, artifacts: Path
) -> None:
    origin = setup(stack, new_user, upstream)
    page = browsing.page
    browsing.sign_in(new_user)
    browsing.open_tab("Credentials")
    row = page.locator(f'tr[data-key="{KEY}"]')
    expect(row.locator("td.hosts")).to_have_text("Any host — bind to hosts")

    toggle = row.get_by_role("button", name=f"Edit hosts for {KEY}")
    toggle.click()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    editor = page.get_by_role("group", name=f"Hosts for {KEY}")
    expect(editor.get_by_label("Add a host pattern")).to_be_focused()
    # Only the provider that references this key is offered, as host:port (port not default).
    suggestion = editor.get_by_role("button", name=f"Add {origin} (used by local)")
    expect(suggestion).to_be_visible()
    expect(editor.locator("button.suggestion")).to_have_count(1)
    suggestion.click()
    expect(editor.get_by_role("listitem").filter(has_text=origin)).to_be_visible()
    expect(editor.locator("button.suggestion")).to_have_count(0)
    assert stored_hosts(stack, new_user) == [], "nothing is stored before Save"
    editor.get_by_role("button", name="Save hosts").click()

    expect(row.locator("td.hosts")).to_have_text(origin)
    expect(editor).to_have_count(0)
    assert stored_hosts(stack, new_user) == [origin]
    assert SECRET not in page.content(), "the host editor never shows a value"
    page.screenshot(path=artifacts / "credentials-bound.png", full_page=True)

    # The router substitutes the bound key into a call to that host.
    upstream.reset()
    with api(stack, new_user) as client:
        answer = client.post(
            "/v1/chat/completions",
            json={"model": "local-model", "messages": [{"role": "user", "content": "hi"}]},
        )
    assert answer.status_code == 200, answer.text
    assert "X-Credential-Warning" not in answer.headers
    assert upstream.last_request().header("authorization") == f"Bearer {SECRET}"

    # Unbind, by keyboard: remove the only pattern, then Save.
    toggle.click()
    editor.get_by_role("button", name=f"Remove {origin}").press("Enter")
    expect(editor).to_contain_text("No patterns: any host.")
    editor.get_by_role("button", name="Save hosts").focus()
    page.keyboard.press("Enter")
    expect(row.locator("td.hosts")).to_have_text("Any host — bind to hosts")
    assert stored_hosts(stack, new_user) == []
    assert SECRET not in page.content()


def test_the_providers_arriving_late_keep_the_focus_on_a_remove_button(
    browsing: Browsing, stack: UiStack, new_user: str, upstream: FakeUpstream
) -> None:
    """The suggestions load after the editor opens; that must not redraw the chips under focus.

    A keyboard user who has reached a chip's Remove button before the provider list arrives
    keeps that button (it once was replaced, so Enter went nowhere).
    """
    origin = setup(stack, new_user, upstream)
    put_hosts(stack, new_user, [origin])
    page = browsing.page
    browsing.sign_in(new_user)
    browsing.open_tab("Credentials")
    held: list[Any] = []
    page.route(f"**{ME}/ai-providers", lambda route: held.append(route))
    row = page.locator(f'tr[data-key="{KEY}"]')
    row.get_by_role("button", name=f"Edit hosts for {KEY}").click()
    editor = page.get_by_role("group", name=f"Hosts for {KEY}")
    remove = editor.get_by_role("button", name=f"Remove {origin}")
    expect(editor.get_by_label("Add a host pattern")).to_be_focused()
    for _ in range(100):  # the handler runs while Playwright waits
        if held:
            break
        page.wait_for_timeout(50)
    assert len(held) == 1, "the provider list is held on its way"
    remove.focus()
    expect(remove).to_be_focused()
    held[0].continue_()
    expect(editor).to_contain_text("The hosts of the providers that use this key are all listed.")
    expect(remove).to_be_focused()
    page.keyboard.press("Enter")
    expect(editor).to_contain_text("No patterns: any host.")
    assert stored_hosts(stack, new_user) == [origin], "nothing is stored before Save"


def test_a_bad_pattern_shows_the_apis_message_and_changes_nothing(
    browsing: Browsing, stack: UiStack, new_user: str, upstream: FakeUpstream
) -> None:
    setup(stack, new_user, upstream, hosts=["api.openai.com"])
    page = browsing.page
    browsing.sign_in(new_user)
    browsing.open_tab("Credentials")
    row = page.locator(f'tr[data-key="{KEY}"]')
    expect(row.locator("td.hosts")).to_have_text("api.openai.com")
    row.get_by_role("button", name=f"Edit hosts for {KEY}").click()
    editor = page.get_by_role("group", name=f"Hosts for {KEY}")
    pattern = editor.get_by_label("Add a host pattern")
    pattern.fill("https://api.openai.com/v1")
    pattern.press("Enter")  # adds it to the draft
    editor.get_by_role("button", name="Save hosts").click()

    refused = put_hosts(stack, new_user, ["api.openai.com", "https://api.openai.com/v1"])
    assert refused.status_code == 400, refused.text
    message = refused.json()["error"]["message"]
    assert "https://api.openai.com/v1" in message
    expect(page.get_by_role("alert")).to_contain_text(f"invalid_argument (HTTP 400): {message}")
    expect(editor.locator(".error")).to_have_text(message)
    assert stored_hosts(stack, new_user) == ["api.openai.com"]

    # Cancel (Escape) leaves the stored binding as it was.
    pattern.press("Escape")
    expect(editor).to_have_count(0)
    expect(row.locator("td.hosts")).to_have_text("api.openai.com")
    assert SECRET not in page.content()


def test_the_provider_card_warns_when_its_host_is_not_allowed(
    browsing: Browsing, stack: UiStack, new_user: str, upstream: FakeUpstream, artifacts: Path
) -> None:
    # Without a port a pattern stands for the scheme's default port: 127.0.0.1 is not
    # 127.0.0.1:<port>.
    origin = setup(stack, new_user, upstream, hosts=["api.openai.com", "127.0.0.1"])
    page = browsing.page
    browsing.sign_in(new_user)
    card = page.locator('[data-provider="local"]')
    warning = card.locator(".warning", has_text=f"Credential not allowed for host: {KEY}")
    expect(warning).to_be_visible()
    expect(card).to_contain_text(f"not {origin}")
    expect(page.locator('[data-provider="elsewhere"] .warning')).to_have_count(0)
    page.screenshot(path=artifacts / "providers-host-warning.png", full_page=True)

    browsing.open_tab("Credentials")
    row = page.locator(f'tr[data-key="{KEY}"]')
    row.get_by_role("button", name=f"Edit hosts for {KEY}").click()
    editor = page.get_by_role("group", name=f"Hosts for {KEY}")
    expect(editor.locator(".warning")).to_contain_text("Provider local")
    assert SECRET not in page.content(), "the host editor never shows a value"
    page.screenshot(path=artifacts / "credential-hosts-editor.png", full_page=True)
    editor.get_by_role("button", name=f"Add {origin}").click()
    expect(editor.locator(".warning")).to_have_count(0)
    editor.get_by_role("button", name="Save hosts").click()
    expect(row.locator("td.hosts")).to_contain_text(origin)
    assert stored_hosts(stack, new_user) == sorted(["127.0.0.1", "api.openai.com", origin])

    browsing.open_tab("AI providers")
    expect(card.get_by_text("bound to", exact=False)).to_be_visible()
    expect(card.locator(".warning")).to_have_count(0)

    # A wildcard never matches an IP address: back to the warning.
    assert put_hosts(stack, new_user, ["*.openai.com"]).status_code == 200
    browsing.open_tab("Credentials")
    browsing.open_tab("AI providers")
    expect(warning).to_be_visible()
    assert SECRET not in page.content()
