"""Sessions, CSRF, security headers and the UI's behaviour when an endpoint is missing."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from playwright.sync_api import Browser, Route, expect

from services.gateway.web_ui import CONTENT_SECURITY_POLICY
from tests.support.stack import UiStack
from tests.ui.conftest import Browsing, api

CREDS = "/api/v2/users/me/ai-credentials"
SESSION_COOKIE_NAME = "aicreds_session"


def cookie_client(stack: UiStack, browsing: Browsing, origin: str | None) -> httpx.Client:
    """An httpx client holding the page's session cookie, sending `origin` on every request."""
    cookies = browsing.page.context.cookies(stack.url)
    headers = {"Cookie": "; ".join(f"{c['name']}={c['value']}" for c in cookies)}
    if origin is not None:
        headers["Origin"] = origin
    return httpx.Client(base_url=stack.url, headers=headers, timeout=10)


def test_every_ui_answer_carries_the_security_headers(stack: UiStack) -> None:
    with httpx.Client(base_url=stack.url, timeout=10) as client:
        root = client.get("/")
        assert root.status_code == 307 and root.headers["location"] == "/ui/"
        assert client.get("/ui").headers["location"] == "/ui/"
        for path, content_type in [
            ("/ui/", "text/html"),
            ("/ui/index.html", "text/html"),
            ("/ui/app.js", "javascript"),
            ("/ui/style.css", "text/css"),
            ("/ui/nothing-here.js", "application/json"),
        ]:
            response = client.get(path)
            assert content_type in response.headers["content-type"], path
            assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["referrer-policy"] == "no-referrer"
            assert response.headers["x-frame-options"] == "DENY"
        assert client.get("/ui/").headers["cache-control"] == "no-store"
        assert client.get("/ui/nothing-here.js").status_code == 404
        assert client.post("/ui/app.js").status_code == 405
        assert client.get("/ui/../pyproject.toml").status_code == 404
        # Static files are one route template in the metrics, never one label per file.
        metrics = client.get("/metrics").text
        assert 'route="/ui/{path:path}"' in metrics
        assert "app.js" not in metrics and "nothing-here" not in metrics


def test_index_has_no_inline_script_or_style() -> None:
    static = Path(__file__).parents[2] / "services" / "gateway" / "web_ui" / "static"
    html = (static / "index.html").read_text("utf-8")
    assert "<style" not in html and "style=" not in html
    assert "<script" in html and "<script>" not in html, "scripts only by src"
    scripts = "".join(p.read_text("utf-8") for p in static.glob("*.js"))
    for sink in ("innerHTML =", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in scripts, sink
    for leak in ("localStorage", "sessionStorage", "console.log", "console.error"):
        assert leak not in scripts, leak


def test_the_session_cookie_is_httponly_strict_and_refuses_other_origins(
    browsing: Browsing, stack: UiStack, new_user: str
) -> None:
    browsing.sign_in(new_user)
    (cookie,) = browsing.page.context.cookies(stack.url)
    assert cookie["name"] == SESSION_COOKIE_NAME
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert browsing.page.evaluate("document.cookie") == ""

    with cookie_client(stack, browsing, "http://evil.example") as evil:
        refused = evil.put(f"{CREDS}/stolen", json={"value": "attacker-value"})
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "forbidden"
        assert evil.get(CREDS).status_code == 200, "reads need no Origin"
    with cookie_client(stack, browsing, None) as no_origin:
        assert no_origin.delete(CREDS).status_code == 403
    with cookie_client(stack, browsing, stack.url) as same:
        assert same.put(f"{CREDS}/mine", json={"value": "my-value"}).status_code == 200
    with api(stack, new_user) as client:
        assert client.get(CREDS).json()["response"]["credentials"] == {"mine": "my-value"}


def test_sign_out_ends_the_session(browsing: Browsing, stack: UiStack, new_user: str) -> None:
    browsing.sign_in(new_user)
    with cookie_client(stack, browsing, None) as old:
        assert old.get(CREDS).status_code == 200
        browsing.page.get_by_role("button", name="Sign out").click()
        expect(browsing.page.get_by_text("You have signed out.")).to_be_visible()
        expect(browsing.page.get_by_role("tab", name="AI providers")).to_be_hidden()
        assert old.get(CREDS).status_code == 401
    assert browsing.page.context.cookies(stack.url) == []


def test_an_ended_session_returns_to_sign_in_with_a_message(
    browsing: Browsing, stack: UiStack, new_user: str, artifacts: Path
) -> None:
    browsing.sign_in(new_user)
    with cookie_client(stack, browsing, stack.url) as elsewhere:
        assert elsewhere.delete("/api/v2/sessions/current").status_code == 200
    browsing.open_tab("Credentials")
    page = browsing.page
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.locator("#sign-in-message")).to_contain_text("Your session has ended or expired")
    expect(page.locator("#alerts")).to_be_empty()  # the message says it all, once
    page.screenshot(path=artifacts / "session-ended.png")
    browsing.sign_in(new_user)  # and signing in again works


def test_a_bad_token_is_refused_with_the_apis_message(browsing: Browsing) -> None:
    page = browsing.page
    page.goto(browsing.url + "/ui/")
    page.get_by_label("API token", exact=True).fill("sk-aic-" + "x" * 43)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("Sign-in failed: unauthorized (HTTP 401)")
    expect(page.get_by_role("tab", name="AI providers")).to_be_hidden()


def make_provider(stack: UiStack, token: str, upstream_origin: str) -> None:
    with api(stack, token) as client:
        created = client.post(
            "/api/v2/users/me/ai-providers",
            json={
                "name": "openai",
                "kind": "openai",
                "base_url": f"{upstream_origin}/v1",
                "headers": {
                    "Authorization": ["Bearer sk-literal-secret-in-header"],
                    "X-Org": ["{{credential:org_id}}"],
                },
                "models": ["gpt-4o"],
            },
        )
    assert created.status_code == 201, created.text
    assert created.json()["response"]["warnings"], "the API warns about the literal secret"


def test_missing_test_and_activity_endpoints_show_the_apis_404(
    browsing: Browsing, stack: UiStack, new_user: str
) -> None:
    """Until the endpoints exist, the gateway answers 404; the page says so and goes on."""
    make_provider(stack, new_user, stack.llm.url)
    page = browsing.page
    not_found = json.dumps({"error": {"code": "not_found", "message": "no such endpoint"}})

    def missing(route: Route) -> None:
        route.fulfill(status=404, content_type="application/json", body=not_found)

    page.route("**/ai-providers/*/test", missing)
    page.route("**/users/me/activity?*", missing)
    browsing.sign_in(new_user)
    card = page.locator('[data-provider="openai"]')
    expect(card.locator(".warning", has_text="Credential not found: org_id")).to_be_visible()
    expect(
        card.locator(".warning", has_text="Header Authorization holds a literal secret")
    ).to_be_visible()
    expect(card.get_by_text("MASKED", exact=True)).to_be_visible()

    # A masked value is never saved back: editing asks for it again.
    card.get_by_role("button", name="Edit openai").click()
    editing = page.get_by_role("form", name="Edit provider openai")
    hidden = editing.locator(".header-row", has=page.locator('input[value="Authorization"]'))
    assert hidden.get_by_label("Header value").input_value() == ""
    editing.get_by_role("button", name="Save provider").click()
    expect(page.get_by_role("alert")).to_contain_text("the stored value is hidden (MASKED)")
    editing.get_by_role("button", name="Cancel").click()

    card.get_by_role("button", name="Test openai").click()
    expect(card.locator(".test-result")).to_contain_text(
        "Test could not run: not_found (HTTP 404): no such endpoint"
    )
    expect(page.get_by_role("alert")).to_contain_text("Testing openai: not_found (HTTP 404)")
    browsing.open_tab("Activity")
    expect(page.get_by_text("Activity could not be loaded.")).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text("Loading activity: not_found (HTTP 404)")


def test_test_result_and_activity_as_the_contract_describes_them(
    browsing: Browsing, stack: UiStack, new_user: str
) -> None:
    make_provider(stack, new_user, stack.llm.url)
    page = browsing.page
    result = {
        "provider": "openai",
        "outcome": "key_rejected",
        "status": 401,
        "message": "the upstream refused the key",
        "warnings": ["Credential not found: org_id"],
        "checked_at": "2026-11-27T12:00:00Z",
    }
    events = [
        {
            "time": "2026-11-27T12:00:00Z",
            "action": "credentials.put",
            "keys": ["openai_api_key"],
            "outcome": "ok",
            "caller": "gateway",
        }
    ]
    page.route(
        "**/ai-providers/openai/test",
        lambda route: route.fulfill(json={"response": result}),
    )
    page.route(
        "**/users/me/activity?limit=50",
        lambda route: route.fulfill(json={"response": {"events": events}}),
    )
    browsing.sign_in(new_user)
    card = page.locator('[data-provider="openai"]')
    card.get_by_role("button", name="Test openai").click()
    outcome = card.locator(".test-result")
    expect(outcome.locator(".badge")).to_have_text("Key rejected")
    expect(outcome).to_contain_text("HTTP 401")
    expect(outcome).to_contain_text("the upstream refused the key")
    expect(outcome).to_contain_text("checked at")
    expect(outcome.locator(".warning")).to_have_text("Credential not found: org_id")

    browsing.open_tab("Activity")
    row = page.locator(".activity tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("credentials.put")
    expect(row).to_contain_text("openai_api_key")
    expect(row).to_contain_text("ok")


def test_tabs_follow_the_keyboard_and_a_narrow_window_does_not_scroll_sideways(
    browsing: Browsing, new_user: str
) -> None:
    page = browsing.page
    browsing.sign_in(new_user)
    page.get_by_role("tab", name="AI providers").focus()
    page.keyboard.press("ArrowRight")
    expect(page.get_by_role("tab", name="Credentials")).to_have_attribute("aria-selected", "true")
    expect(page.get_by_role("tab", name="Credentials")).to_be_focused()
    page.keyboard.press("End")
    expect(page.get_by_role("tab", name="Usage")).to_have_attribute("aria-selected", "true")
    page.keyboard.press("Home")
    expect(page.get_by_role("tabpanel")).to_contain_text("AI providers")
    page.set_viewport_size({"width": 380, "height": 800})
    for tab in ("Credentials", "API tokens", "AI providers"):
        browsing.open_tab(tab)
        width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], (tab, width)


def test_the_policy_is_enforced_so_the_console_check_can_fail(
    browser: Browser, stack: UiStack
) -> None:
    """An inline script is refused by the page's CSP, and Chromium says so in the console,
    which is what the `browsing` fixture looks for on every other page."""
    context = browser.new_context()
    try:
        page = context.new_page()
        console: list[str] = []
        page.on("console", lambda message: console.append(message.text))
        page.goto(stack.url + "/ui/")
        page.evaluate(
            "() => { const s = document.createElement('script');"
            " s.textContent = 'window.injected = true'; document.head.append(s); }"
        )
        page.wait_for_timeout(200)
        assert page.evaluate("window.injected === undefined")
        assert any("Content Security Policy" in line for line in console), console
    finally:
        context.close()
