"""The masking bypasses of issue 15 through the APIs that show provider headers: the gateway's
provider responses (create, read, list, update) and the router's Preview, which both use
`services.common.header_masking`."""

from __future__ import annotations

from aicreds.router.v1 import router_pb2, router_pb2_grpc

from services.common.grpc_server import open_channel
from tests.gateway.conftest import Stack
from tests.support.stack import ServiceStack

PROVIDERS = "/api/v2/users/me/ai-providers"
HEADERS = {
    "Authorization": ["Bearer sk-live-abc={{credential:x}}"],
    "Proxy-Authorization": ["Basic {{credential:u}}:!@#$"],
    "X-Credential": ["literal-credential-1"],
    "X-JWT": ["eyJhbGciOiJIUzI1NiJ9.e30.sig"],
    "X-Passwd": ["hunter2hunter2"],
    "X-Signature": ["sha256=deadbeef"],
    "X-Session": ["sessionvalue42"],
    "X-Shown": ["{{credential:x}}"],
}
PROVIDER = {
    "name": "p",
    "kind": "custom",
    "base_url": "https://api.example.com/v1",
    "headers": HEADERS,
}
LITERALS = (
    "sk-live-abc",
    "!@#$",
    "literal-credential-1",
    "eyJhbG",
    "hunter2",
    "deadbeef",
    "sessionvalue42",
)


def _masked(shown: dict[str, list[str]]) -> None:
    for name in HEADERS:
        if name == "X-Shown":
            assert shown[name] == HEADERS[name]
        else:
            assert shown[name] == ["MASKED"], name


async def test_provider_responses_mask_every_bypass(stack: Stack, services: ServiceStack) -> None:
    router = services.router
    assert router is not None
    alice = await stack.mint("alice")
    created = await stack.client.post(PROVIDERS, headers=alice.bearer(), json=PROVIDER)
    assert created.status_code == 201, created.text
    body = created.json()["response"]
    _masked(body["provider"]["headers"])
    warned = " ".join(body.get("warnings", []))
    for name in HEADERS:
        assert (name in warned) is (name != "X-Shown"), name
    read = await stack.client.get(f"{PROVIDERS}/p", headers=alice.bearer())
    listed = await stack.client.get(PROVIDERS, headers=alice.bearer())
    updated = await stack.client.put(f"{PROVIDERS}/p", headers=alice.bearer(), json=PROVIDER)
    for response in (created, read, listed, updated):
        for literal in LITERALS:
            assert literal not in response.text, (literal, response.request.method)

    token = (stack.settings.router_token_file).read_text().strip()
    async with open_channel(router.address, token) as channel:
        reply = await router_pb2_grpc.RouterServiceStub(channel).Preview(
            router_pb2.PreviewRequest(user_id="alice", provider_name="p"), timeout=5
        )
    previewed = {h.name: h.value for h in reply.headers}
    for name in HEADERS:
        if name != "X-Shown":
            assert previewed[name] == "MASKED", name
    for literal in LITERALS:
        assert literal not in str(reply)
