"""Token usage end to end (issue 18): model calls through the real gateway, router and vault to
a fake upstream that reports `usage`, streamed and not, in both vendors' shapes; then the user's
per-day totals through `GET /api/v2/users/me/usage`, and the router's token metrics."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from tests.support.fake_upstream import FakeUpstream, UpstreamFactory, VendorApi
from tests.support.metrics import scrape
from tests.support.stack import LlmStack, running_stack, seed_llm_user

USAGE = "/api/v2/users/me/usage"


@asynccontextmanager
async def usage_stack(directory: Path, upstream: FakeUpstream) -> AsyncIterator[LlmStack]:
    """`llm_stack`'s, with the router exporting its metrics."""
    async with running_stack(
        directory, egress_allow="127.0.0.1", router_settings={"metrics_listen": "127.0.0.1:0"}
    ) as services:
        gateway = await services.gateway(vault_timeout=2.0, router_timeout=30.0)
        tokens = await seed_llm_user(services.vault, upstream)
        yield LlmStack(gateway.url, services, gateway.app, tokens, gateway.settings)


async def call(
    client: httpx.AsyncClient, stack: LlmStack, path: str, body: Mapping[str, object]
) -> bytes:
    headers = {"Authorization": f"Bearer {stack.tokens.invoke}", "anthropic-version": "2023-06-01"}
    response = await client.post(f"{stack.url}{path}", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response.content


async def test_usage_of_streamed_and_whole_answers_per_day(
    tmp_path: Path, upstream_factory: UpstreamFactory
) -> None:
    upstream = await upstream_factory(VendorApi())
    async with usage_stack(tmp_path, upstream) as stack, httpx.AsyncClient(timeout=10) as client:
        vendor = upstream.vendor
        chat = {"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}
        await call(client, stack, "/v1/chat/completions", chat)
        streamed = await call(
            client,
            stack,
            "/v1/chat/completions",
            chat | {"stream": True, "stream_options": {"include_usage": True}},
        )
        assert b'"prompt_tokens": 5' in streamed  # relayed untouched
        vendor.usage = (100, 1)
        await call(client, stack, "/v1/chat/completions", chat | {"model": "openai/gpt-4"})
        # A stream without include_usage reports nothing, and counts nothing.
        await call(client, stack, "/v1/chat/completions", chat | {"stream": True})
        vendor.usage = (7, 9)
        message = {"model": "claude-3.5-sonnet", "max_tokens": 16, "messages": chat["messages"]}
        await call(client, stack, "/v1/messages", message)
        await call(client, stack, "/v1/messages", message | {"stream": True})
        router = stack.services.router
        assert router is not None
        await router.router.usage.flush()

        auth = {"Authorization": f"Bearer {stack.tokens.invoke}"}
        reply = await client.get(f"{stack.url}{USAGE}", headers=auth)
        assert reply.status_code == 200, reply.text
        today = datetime.now(UTC).date()
        assert reply.json()["response"] == {
            "from": (today - timedelta(29)).isoformat(),
            "to": today.isoformat(),
            "rows": [
                {
                    "day": today.isoformat(),
                    "provider": "anthropic",
                    "model": "claude-3.5-sonnet",
                    "input_tokens": 14,
                    "output_tokens": 18,
                    "calls": 2,
                },
                {
                    "day": today.isoformat(),
                    "provider": "openai",
                    "model": "gpt-4",
                    "input_tokens": 110,
                    "output_tokens": 13,
                    "calls": 3,
                },
            ],
            "totals": {"input_tokens": 124, "output_tokens": 31, "calls": 5},
        }
        # A range of other days holds none of it.
        past = {"from": "2020-01-01", "to": "2020-12-31"}
        reply = await client.get(f"{stack.url}{USAGE}", params=past, headers=auth)
        assert reply.json()["response"]["rows"] == []
        assert reply.json()["response"]["totals"] == {
            "input_tokens": 0,
            "output_tokens": 0,
            "calls": 0,
        }

        assert router.router.server.metrics is not None
        scraped = await scrape(router.router.server.metrics.port)
        counted = {
            (s.labels["provider"], s.labels["model"], s.labels["type"]): s.value
            for s in scraped.samples
            if s.name == "aicreds_router_tokens_total"
        }
        assert counted == {
            ("openai", "gpt-4", "input"): 110,
            ("openai", "gpt-4", "output"): 13,
            ("anthropic", "claude-3.5-sonnet", "input"): 14,
            ("anthropic", "claude-3.5-sonnet", "output"): 18,
        }
        assert scraped.value("aicreds_router_token_usage_count", type="input") == 5
        # No label holds a credential value, a key name, a token or the user.
        secrets = [*stack.secrets(), "openai_api_key", "anthropic_api_key", "alice"]
        assert scraped.leaks(secrets) == []


async def test_usage_range_errors_and_scope(
    tmp_path: Path, upstream_factory: UpstreamFactory
) -> None:
    upstream = await upstream_factory(VendorApi())
    async with usage_stack(tmp_path, upstream) as stack, httpx.AsyncClient(timeout=10) as client:
        auth = {"Authorization": f"Bearer {stack.tokens.invoke}"}
        for params, needle in (
            ({"from": "2026-02-30"}, "from must be a day"),
            ({"from": "2026-01-02", "to": "2026-01-01"}, "from must not be after to"),
            ({"from": "2020-01-01", "to": "2026-01-01"}, "at most 366 days"),
        ):
            reply = await client.get(f"{stack.url}{USAGE}", params=params, headers=auth)
            assert reply.status_code == 400, reply.text
            assert reply.json()["error"]["code"] == "invalid_argument"
            assert needle in reply.json()["error"]["message"]
        ok = await client.get(
            f"{stack.url}{USAGE}", params={"from": "2025-01-01", "to": "2026-01-01"}, headers=auth
        )
        assert ok.status_code == 200 and json.loads(ok.text)["response"]["rows"] == []
        narrow = await stack.services.mint("alice", ["credentials:read"], name="narrow")
        reply = await client.get(f"{stack.url}{USAGE}", headers=narrow.bearer())
        assert reply.status_code == 403
