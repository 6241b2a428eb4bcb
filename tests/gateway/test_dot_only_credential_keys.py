"""REST: a credential key made only of dots is refused with 400, however it reaches the gateway
(a raw `..` segment, percent-encoded `%2e%2e`, a key in a replace-all body), and nothing is
stored."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlsplit

import pytest

from tests.gateway.conftest import Minted, Stack

BASE = "/api/v2/users/me/ai-credentials"


@pytest.fixture
async def alice(stack: Stack) -> Minted:
    return await stack.mint("alice")


async def _raw_put(
    stack: Stack, path: str, token: str, body: bytes
) -> tuple[int, dict[str, object]]:
    """A PUT sent with its path exactly as given (as `curl --path-as-is` would)."""
    url = urlsplit(stack.url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        writer.write(
            f"PUT {path} HTTP/1.1\r\nHost: {url.netloc}\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, payload = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload)


@pytest.mark.parametrize("segment", ["..", ".", "%2e%2e", "%2E%2E", "%2e", ".%2e", "%2e.", "..."])
async def test_put_one_with_a_dot_only_key_is_400(
    stack: Stack, alice: Minted, segment: str
) -> None:
    status, body = await _raw_put(stack, f"{BASE}/{segment}", alice.token, b'{"value": "v"}')
    assert status == 400, body
    assert body["error"]["code"] == "invalid_argument"  # type: ignore[index]
    stored = await stack.client.get(BASE, headers=alice.bearer())
    assert stored.json() == {"response": {"credentials": {}}}


@pytest.mark.parametrize("segment", ["%2e%2e", "%2E%2E", "%2e", "..."])
async def test_percent_encoded_dot_keys_are_refused_as_invalid_keys(
    stack: Stack, alice: Minted, segment: str
) -> None:
    response = await stack.client.put(
        f"{BASE}/{segment}", headers=alice.bearer(), json={"value": "v"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_argument"


@pytest.mark.parametrize("key", [".", "..", "..."])
async def test_replace_all_with_a_dot_only_key_is_400(
    stack: Stack, alice: Minted, key: str
) -> None:
    response = await stack.client.put(
        BASE, headers=alice.bearer(), json={"credentials": {"ok": "v", key: "v"}}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_argument"
    stored = await stack.client.get(BASE, headers=alice.bearer())
    assert stored.json() == {"response": {"credentials": {}}}
