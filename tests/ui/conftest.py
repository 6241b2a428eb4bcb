"""Browser tests of the web UI in a real Chromium, against a real stack on 127.0.0.1.

One fake upstream, one stack (vault, router, gateway) and one Chromium per module; a fresh
browser context (no cookies, no storage) and usually a fresh user per test. Chromium is Debian's
(`shutil.which("chromium")`); no browser is ever downloaded. Without it the tests are skipped
locally and fail when `CI=true`: CI must never skip them.

Every page's console is collected: a Content-Security-Policy violation or an uncaught error on
any page fails the test that opened it. Screenshots go to `$UI_ARTIFACTS_DIR`, else to
`ui-artifacts/` in pytest's base temporary directory.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.support.background import BackgroundLoop
from tests.support.fake_upstream import FakeUpstream
from tests.support.missing import skip_or_fail
from tests.support.stack import UiStack, ui_stack

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
VIEWPORT = {"width": 1280, "height": 800}


def chromium_executable() -> str:
    """Debian's chromium, or skip (locally) / fail (CI=true) with the reason."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path:
        return path
    skip_or_fail("browser tests", "no chromium on PATH", "apt-get install chromium")


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


@pytest.fixture(scope="module")
def servers() -> Iterator[BackgroundLoop]:
    loop = BackgroundLoop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def stack(
    servers: BackgroundLoop, upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> UiStack:
    return servers.enter(ui_stack(tmp_path_factory.mktemp("ui-stack"), upstream))


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = chromium_executable()
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("UI_ARTIFACTS_DIR")
    directory = Path(configured) if configured else tmp_path_factory.getbasetemp() / "ui-artifacts"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@dataclass
class Browsing:
    """A page in a fresh context, with everything its console said."""

    page: Page
    url: str
    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def csp_violations(self) -> list[str]:
        return [
            line
            for line in self.console
            if "Content Security Policy" in line or "Refused to" in line
        ]

    def sign_in(self, token: str) -> None:
        self.page.goto(self.url + "/")
        self.page.get_by_label("API token", exact=True).fill(token)
        self.page.get_by_role("button", name="Sign in").click()
        expect(self.page.get_by_role("tab", name="AI providers")).to_have_attribute(
            "aria-selected", "true"
        )

    def open_tab(self, name: str) -> None:
        self.page.get_by_role("tab", name=name).click()

    def alerts(self) -> str:
        return self.page.locator("#alerts").inner_text()

    def session_cookie(self) -> dict[str, str]:
        cookies = self.page.context.cookies(self.url)
        return {cookie["name"]: cookie["value"] for cookie in cookies}


@pytest.fixture
def browsing(browser: Browser, stack: UiStack) -> Iterator[Browsing]:
    context = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    page = context.new_page()
    page.set_default_timeout(10_000)
    seen = Browsing(page, stack.url)
    page.on("console", lambda message: seen.console.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: seen.errors.append(str(error)))
    try:
        yield seen
    finally:
        context.close()
    assert not seen.csp_violations(), seen.csp_violations()
    assert not seen.errors, seen.errors


@pytest.fixture
def new_user(stack: UiStack, servers: BackgroundLoop, request: pytest.FixtureRequest) -> str:
    """A token of a user of its own (named after the test), with every scope."""
    user = "u-" + request.node.name.removeprefix("test_")[:48]
    return servers.run(stack.mint(user))


def api(stack: UiStack, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=stack.url, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
