"""Credential host binding end to end (SPEC 2.9; issue 15 item 1): the REST endpoints, and a
real vault + router + gateway + fake upstream on 127.0.0.1.

A credential bound to `api.openai.com` is never substituted into a call to another host (the
fake upstream on 127.0.0.1 stands for it), even after the provider's base_url is changed
through the API: the call carries `X-Credential-Warning: Credential not allowed for host: KEY`
and the upstream gets the placeholder unreplaced (on_missing_credential=warn) or nothing at all
(on_missing_credential=error: 424). Bound to `127.0.0.1:<port>` it is substituted.
"""

from __future__ import annotations

import pytest

from tests.support.fake_upstream import FakeUpstream, UpstreamFactory
from tests.support.stack import Minted, ServiceStackFactory, Stack

CREDENTIALS = "/api/v2/users/me/ai-credentials"
ALL_HOSTS = "/api/v2/users/me/ai-credential-hosts"
PROVIDERS = "/api/v2/users/me/ai-providers"
KEY = "openai_api_key"
SECRET = "sk-proj-BoundSecretValue-0123456789abcdef"
PLACEHOLDER = "{{credential:openai_api_key}}"
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


def _provider(base_url: str, on_missing: str) -> dict[str, object]:
    return {
        "name": "openai",
        "kind": "openai",
        "base_url": base_url,
        "headers": {"Authorization": [f"Bearer {PLACEHOLDER}"]},
        "models": ["gpt-4o"],
        "on_missing_credential": on_missing,
    }


async def _started(
    stack_factory: ServiceStackFactory, upstream_factory: UpstreamFactory
) -> tuple[Stack, FakeUpstream, Minted]:
    services = await stack_factory(egress_allow="127.0.0.1")
    stack = await services.gateway()
    upstream = await upstream_factory()
    alice = await stack.mint("alice")
    response = await stack.client.put(
        f"{CREDENTIALS}/{KEY}", headers=alice.bearer(), json={"value": SECRET}
    )
    assert response.status_code == 200, response.text
    return stack, upstream, alice


async def _bind(stack: Stack, alice: Minted, hosts: list[str]) -> list[str]:
    response = await stack.client.put(
        f"{CREDENTIALS}/{KEY}/hosts", headers=alice.bearer(), json={"hosts": hosts}
    )
    assert response.status_code == 200, response.text
    body = response.json()["response"]
    assert body["key"] == KEY
    return list(body["hosts"])


async def test_the_rest_endpoints(
    stack_factory: ServiceStackFactory, upstream_factory: UpstreamFactory
) -> None:
    stack, _, alice = await _started(stack_factory, upstream_factory)
    client, auth = stack.client, alice.bearer()
    assert (await client.get(ALL_HOSTS, headers=auth)).json() == {"response": {"hosts": {}}}
    one = await client.get(f"{CREDENTIALS}/{KEY}/hosts", headers=auth)
    assert one.json() == {"response": {"key": KEY, "hosts": []}}

    assert await _bind(stack, alice, ["API.OpenAI.com", "*.openai.azure.com"]) == [
        "*.openai.azure.com",
        "api.openai.com",
    ]
    bound = ["*.openai.azure.com", "api.openai.com"]
    assert (await client.get(ALL_HOSTS, headers=auth)).json() == {
        "response": {"hosts": {KEY: bound}}
    }
    one = await client.get(f"{CREDENTIALS}/{KEY}/hosts", headers=auth)
    assert one.json() == {"response": {"key": KEY, "hosts": bound}}
    # The seed's shapes are untouched.
    whole = await client.get(CREDENTIALS, headers=auth)
    assert whole.json() == {"response": {"credentials": {KEY: SECRET}}}
    value = await client.get(f"{CREDENTIALS}/{KEY}", headers=auth)
    assert value.json() == {"response": {"key": KEY, "value": SECRET}}

    bad = await client.put(
        f"{CREDENTIALS}/{KEY}/hosts", headers=auth, json={"hosts": ["https://x.example/"]}
    )
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "invalid_argument"
    assert "https://x.example/" in bad.json()["error"]["message"]
    body: object
    for body in ({}, {"hosts": "api.openai.com"}, {"hosts": [1]}, [], {"hosts": [], "x": 1}):
        response = await client.put(f"{CREDENTIALS}/{KEY}/hosts", headers=auth, json=body)
        assert response.status_code == 400, body

    for method in ("get", "put"):
        missing = await client.request(
            method, f"{CREDENTIALS}/absent/hosts", headers=auth, json={"hosts": []}
        )
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "credential_not_found"

    read_only = await stack.mint("alice", ["credentials:read"])
    refused = await client.put(
        f"{CREDENTIALS}/{KEY}/hosts", headers=read_only.bearer(), json={"hosts": []}
    )
    assert refused.status_code == 403
    assert (await client.get(ALL_HOSTS, headers=read_only.bearer())).status_code == 200

    assert await _bind(stack, alice, []) == []
    assert (await client.get(ALL_HOSTS, headers=auth)).json() == {"response": {"hosts": {}}}


@pytest.mark.parametrize("on_missing", ["warn", "error"])
async def test_a_bound_credential_never_reaches_another_host(
    stack_factory: ServiceStackFactory, upstream_factory: UpstreamFactory, on_missing: str
) -> None:
    stack, upstream, alice = await _started(stack_factory, upstream_factory)
    client, auth = stack.client, alice.bearer()
    await _bind(stack, alice, ["api.openai.com"])
    created = await client.post(
        PROVIDERS, headers=auth, json=_provider("https://api.openai.com/v1", on_missing)
    )
    assert created.status_code == 201, created.text
    # The provider is pointed elsewhere through the API: the binding still holds.
    moved = await client.put(
        f"{PROVIDERS}/openai", headers=auth, json=_provider(upstream.base_url + "/v1", on_missing)
    )
    assert moved.status_code == 200, moved.text

    answer = await client.post("/v1/chat/completions", headers=auth, json=CHAT)
    warning = f"Credential not allowed for host: {KEY}"
    if on_missing == "warn":
        assert answer.status_code == 200, answer.text
        assert answer.headers.get_list("x-credential-warning") == [warning]
        assert len(upstream.requests) == 1
        assert upstream.requests[0].header("authorization") == f"Bearer {PLACEHOLDER}"
    else:
        # As for a missing credential: the error says it (an error carries no warning headers).
        assert answer.status_code == 424, answer.text
        assert answer.json()["error"]["code"] == "credential_not_allowed"
        assert answer.json()["error"]["message"] == warning
        assert upstream.requests == []
    assert SECRET not in answer.text and SECRET not in str(answer.headers)

    # The provider test (CheckProvider) goes the same way.
    checked = await client.post(f"{PROVIDERS}/openai/test", headers=auth)
    assert warning in checked.text and SECRET not in checked.text
    assert all(
        SECRET not in " ".join(value for _, value in request.headers)
        for request in upstream.requests
    )

    # Bound to the upstream's own origin, it is substituted.
    await _bind(stack, alice, ["api.openai.com", f"127.0.0.1:{upstream.port}"])
    answer = await client.post("/v1/chat/completions", headers=auth, json=CHAT)
    assert answer.status_code == 200, answer.text
    assert "x-credential-warning" not in answer.headers
    assert upstream.requests[-1].header("authorization") == f"Bearer {SECRET}"

    # A pattern without a port stands for the scheme's default port, not the upstream's.
    await _bind(stack, alice, ["127.0.0.1"])
    sent = len(upstream.requests)
    answer = await client.post("/v1/chat/completions", headers=auth, json=CHAT)
    assert answer.status_code == (200 if on_missing == "warn" else 424)
    assert all(
        SECRET not in " ".join(value for _, value in request.headers)
        for request in upstream.requests[sent:]
    )
