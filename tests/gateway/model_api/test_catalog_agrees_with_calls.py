"""`GET /v1/models[/{id}]` says what a real call would do (issue 12, SPEC 2.6).

The catalog and the vault's `Resolve` once had their own copies of the selection rule, and
disagreed: `openai/gpt-4o-mini` listed by `azure` was shown under azure while a call went to
`openai`, and `openai/gpt-4o ` (a trailing space) or an over-long `openai/...` was "found" while
every call got 404. Both now use `services.common.model_selection`; this test runs the real
vault, router and gateway and a fake upstream, and for each model id compares the catalog's
answer with where a `POST /v1/chat/completions` naming it lands.

Every provider sends a header `X-Test-Provider: <its name>`, so the one fake upstream tells
which provider a call went through, and the body it received tells the upstream model name.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest

from tests.support.background import BackgroundLoop
from tests.support.fake_upstream import FakeUpstream
from tests.support.stack import LlmStack, llm_stack

PROVIDERS = "/api/v2/users/me/ai-providers"
SEEDED = ("openai", "anthropic", "strict", "warned")

#: name -> models. Prefix names (`openai`, `azure`, `my-org`), a provider listing another's
#: prefixed name (`azure`: `openai/gpt-4o-mini`), three listing one model (`shared-model`), a
#: provider listing its own prefix (`my-org/x`) and one listing a prefix no provider has.
CONFIGURED = {
    "openai": ["gpt-4o", "shared-model"],
    "azure": ["openai/gpt-4o-mini", "shared-model", "azure-only"],
    "aaa": ["shared-model"],
    "my-org": ["my-org/x"],
    "local": ["nomad/llama3"],
}

#: model id -> (the provider a call reaches, the model it sends upstream), or None: 404.
CASES: dict[str, tuple[str, str] | None] = {
    "gpt-4o": ("openai", "gpt-4o"),
    "shared-model": ("aaa", "shared-model"),  # several list it: the first by name
    "azure/shared-model": ("azure", "shared-model"),  # the others by prefix
    "openai/gpt-4o-mini": ("openai", "gpt-4o-mini"),  # listed by azure, but the prefix wins
    "azure/openai/gpt-4o-mini": ("azure", "openai/gpt-4o-mini"),
    "azure-only": ("azure", "azure-only"),
    "azure/not-listed": ("azure", "not-listed"),  # a prefix picks whatever it lists
    "openai/org/model": ("openai", "org/model"),  # only the first `/` splits
    "my-org/x": ("my-org", "x"),
    "nomad/llama3": ("local", "nomad/llama3"),  # `nomad` is no provider: listed as is
    "nomad/other": None,
    "unknown/gpt-4o": None,
    "GPT-4O": None,  # case-sensitive
    "gpt-4o ": None,
    " gpt-4o": None,
    "openai/gpt-4o ": None,  # the catalog once said 200 by prefix
    "openai/": None,
    "openai/" + "x" * 250: None,  # 257 characters: no model name; the catalog once said 200
}

CHAT = {"messages": [{"role": "user", "content": "Hello!"}]}


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
) -> LlmStack:
    stack = servers.enter(llm_stack(tmp_path_factory.mktemp("catalog-stack"), upstream))
    with _client(stack) as client:
        for name in SEEDED:
            assert client.delete(f"{PROVIDERS}/{name}").status_code == 200
        for name, models in CONFIGURED.items():
            provider = {
                "name": name,
                "kind": "openai",
                "base_url": f"{upstream.origin}/v1",
                "headers": {"X-Test-Provider": [name]},
                "models": models,
            }
            created = client.post(PROVIDERS, json=provider)
            assert created.status_code == 201, created.text
    return stack


@pytest.fixture
def client(stack: LlmStack, upstream: FakeUpstream) -> Iterator[httpx.Client]:
    upstream.reset()
    with _client(stack) as client:
        yield client


def _client(stack: LlmStack) -> httpx.Client:
    bearer = {"Authorization": f"Bearer {stack.tokens.invoke}"}
    return httpx.Client(base_url=stack.url, headers=bearer, timeout=30)


def _call(client: httpx.Client, upstream: FakeUpstream, model: str) -> tuple[str, str] | None:
    """Where a real chat completion naming `model` goes: (provider, upstream model), or None
    when no provider serves it (and nothing reaches the upstream)."""
    upstream.reset()
    response = client.post("/v1/chat/completions", json={"model": model, **CHAT})
    if response.status_code == 404:
        assert response.json()["error"]["code"] == "model_not_found", response.text
        assert not upstream.requests
        return None
    assert response.status_code == 200, response.text
    received = upstream.last_request()
    return received.header("x-test-provider") or "", received.json()["model"]


def _catalog(client: httpx.Client, model: str) -> str | None:
    """The provider `GET /v1/models/{model}` names as `owned_by`, or None for 404."""
    response = client.get(f"/v1/models/{quote(model, safe='/')}")
    if response.status_code == 404:
        assert response.json()["error"]["code"] == "model_not_found", response.text
        return None
    assert response.status_code == 200, response.text
    assert response.json()["id"] == model
    owner: str = response.json()["owned_by"]
    return owner


@pytest.mark.parametrize("model", list(CASES), ids=repr)
def test_retrieving_a_model_answers_what_a_call_does(
    client: httpx.Client, upstream: FakeUpstream, model: str
) -> None:
    expected = CASES[model]
    assert _call(client, upstream, model) == expected
    assert _catalog(client, model) == (expected[0] if expected else None)


def test_each_listed_model_is_listed_under_the_provider_a_call_reaches(
    client: httpx.Client, upstream: FakeUpstream
) -> None:
    listed = client.get("/v1/models").json()["data"]
    owners = {model["id"]: model["owned_by"] for model in listed}
    # By provider name, then each provider's list; each model once.
    assert list(owners.items()) == [
        ("shared-model", "aaa"),
        ("openai/gpt-4o-mini", "openai"),  # azure lists it; a call naming it goes to openai
        ("azure-only", "azure"),
        ("nomad/llama3", "local"),
        ("my-org/x", "my-org"),
        ("gpt-4o", "openai"),
    ]
    for model, owner in owners.items():
        reached = _call(client, upstream, model)
        assert reached is not None and reached[0] == owner, model


def test_the_gateways_request_id_reaches_the_router_and_the_vault(
    client: httpx.Client, upstream: FakeUpstream
) -> None:
    """The gateway's channels add `x-request-id` to every call (`open_channel`): a call's id is
    in the router's and the vault's access logs, as is a catalog request's."""
    records: list[logging.LogRecord] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    access = logging.getLogger("aicreds.access")
    handler, level = Capture(), access.level
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    try:
        response = client.post(
            "/v1/chat/completions",
            json={"model": "gpt-4o", **CHAT},
            headers={"X-Request-Id": "req-agree-call"},
        )
        assert response.status_code == 200
        assert client.get("/v1/models", headers={"X-Request-Id": "req-agree-list"}).is_success
    finally:
        access.removeHandler(handler)
        access.setLevel(level)

    def rpcs(request_id: str) -> set[tuple[str, str]]:
        lines = [getattr(record, "fields", {}) for record in records]
        return {
            (line["service"], str(line["method"]).rsplit("/", 1)[-1])
            for line in lines
            if line.get("request_id") == request_id
        }

    assert rpcs("req-agree-call") >= {("router", "InvokeBuffered"), ("vault", "Resolve")}
    assert ("vault", "ListProviders") in rpcs("req-agree-list")
