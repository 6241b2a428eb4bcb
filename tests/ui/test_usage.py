"""The Usage tab against the real stack: a user's token usage per day, provider and model, with
the totals row, as the vault recorded it from the router's reports."""

from __future__ import annotations

from datetime import UTC, datetime

from aicreds.vault.v1 import usage_pb2, usage_pb2_grpc
from playwright.sync_api import expect

from tests.support.background import BackgroundLoop
from tests.support.stack import UiStack
from tests.ui.conftest import Browsing


def seed_usage(stack: UiStack, servers: BackgroundLoop, user: str) -> None:
    """Report usage as the router does after answers (`RecordUsage`, as caller `router`)."""

    async def report() -> None:
        stub = usage_pb2_grpc.UsageServiceStub(stack.llm.vault.channel("router"))
        entries = [
            usage_pb2.UsageEntry(
                user_id=user,
                provider="openai",
                model="gpt-4o",
                input_tokens=120,
                output_tokens=30,
                calls=1,
            ),
            usage_pb2.UsageEntry(
                user_id=user,
                provider="openai",
                model="gpt-4o",
                input_tokens=0,
                output_tokens=4,
                calls=1,
            ),
            usage_pb2.UsageEntry(
                user_id=user,
                provider="anthropic",
                model="claude-3.5-sonnet",
                input_tokens=5,
                output_tokens=6,
                calls=1,
            ),
        ]
        await stub.RecordUsage(usage_pb2.RecordUsageRequest(entries=entries), timeout=10)

    servers.run(report())


def test_usage_lists_days_providers_models_and_totals(
    browsing: Browsing, stack: UiStack, servers: BackgroundLoop
) -> None:
    user = "u-usage-view"
    seed_usage(stack, servers, user)
    browsing.sign_in(servers.run(stack.mint(user)))
    browsing.open_tab("Usage")
    page = browsing.page
    table = page.locator("table.usage-table")
    rows = table.locator("tbody tr")
    expect(rows).to_have_count(2)
    today = datetime.now(UTC).date().isoformat()
    expect(rows.nth(0).locator("td").nth(0)).to_have_text(today)
    expect(rows.nth(0).locator("td").nth(1)).to_have_text("anthropic")
    expect(rows.nth(0).locator("td").nth(2)).to_have_text("claude-3.5-sonnet")
    expect(rows.nth(0).locator("td.count")).to_have_text(["5", "6", "1"])
    expect(rows.nth(1).locator("td").nth(1)).to_have_text("openai")
    expect(rows.nth(1).locator("td.count")).to_have_text(["120", "34", "2"])
    totals = table.locator("tfoot tr")
    expect(totals.locator("th")).to_have_text("Total")
    expect(totals.locator("td.count")).to_have_text(["125", "40", "3"])

    # Another range: the days before hold nothing.
    page.get_by_label("From", exact=True).fill("2020-01-01")
    page.get_by_label("To", exact=True).fill("2020-01-31")
    page.get_by_role("button", name="Show").click()
    expect(page.locator("#panel-usage")).to_contain_text(
        "No usage from 2020-01-01 to 2020-01-31 (UTC)."
    )
    expect(table).to_have_count(0)


def test_a_range_too_long_is_reported(browsing: Browsing, new_user: str) -> None:
    browsing.sign_in(new_user)
    browsing.open_tab("Usage")
    page = browsing.page
    page.get_by_label("From", exact=True).fill("2020-01-01")
    page.get_by_label("To", exact=True).fill("2024-01-01")
    page.get_by_role("button", name="Show").click()
    expect(page.locator("#panel-usage")).to_contain_text("Usage could not be loaded.")
    assert "at most 366 days" in browsing.alerts()
