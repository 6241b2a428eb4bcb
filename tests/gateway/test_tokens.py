"""SPEC 2.4 over HTTP: listing, creating (shown once) and revoking API tokens."""

from __future__ import annotations

import pytest

from services.common.scopes import ALL_SCOPES
from tests.gateway.conftest import Minted, Stack

TOKENS = "/api/v2/users/me/api-tokens"
CREDS = "/api/v2/users/me/ai-credentials"


@pytest.fixture
async def alice(stack: Stack) -> Minted:
    return await stack.mint("alice", name="bootstrap")


async def test_create_returns_the_token_once_and_it_works(stack: Stack, alice: Minted) -> None:
    response = await stack.client.post(TOKENS, headers=alice.bearer(), json={"name": "ci"})
    assert response.status_code == 201
    created = response.json()["response"]
    token = created["token"]
    assert token.startswith("sk-aic-") and len(token) >= 7 + 43
    assert created["name"] == "ci"
    assert created["prefix"] == token[:8]
    assert created["scopes"] == list(ALL_SCOPES)
    assert created["expires_at"] is None and created["revoked_at"] is None
    assert created["created_at"].endswith("Z")

    response = await stack.client.get(CREDS, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200

    listed = await stack.client.get(TOKENS, headers=alice.bearer())
    assert listed.status_code == 200
    assert token not in listed.text
    tokens = {t["id"]: t for t in listed.json()["response"]["tokens"]}
    assert set(tokens) == {alice.id, created["id"]}
    assert set(tokens[created["id"]]) == {
        "id",
        "name",
        "prefix",
        "scopes",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
    }


async def test_narrowed_scopes_and_expiry(stack: Stack, alice: Minted) -> None:
    response = await stack.client.post(
        TOKENS,
        headers=alice.bearer(),
        json={"name": "reader", "scopes": ["credentials:read"], "expires_in": 3600},
    )
    created = response.json()["response"]
    assert created["scopes"] == ["credentials:read"]
    assert created["expires_at"] is not None
    reader = {"x-api-key": created["token"]}
    assert (await stack.client.get(CREDS, headers=reader)).status_code == 200
    response = await stack.client.put(CREDS, headers=reader, json={"credentials": {}})
    assert response.status_code == 403


async def test_a_token_cannot_grant_scopes_it_lacks(stack: Stack) -> None:
    narrow = await stack.mint("alice", ["tokens:manage", "credentials:read"])
    response = await stack.client.post(
        TOKENS, headers=narrow.bearer(), json={"name": "x", "scopes": ["credentials:write"]}
    )
    assert response.status_code == 403
    assert "credentials:write" in response.json()["error"]["message"]
    # By default a new token gets what its creator holds, not more.
    response = await stack.client.post(TOKENS, headers=narrow.bearer(), json={"name": "y"})
    assert response.json()["response"]["scopes"] == ["credentials:read", "tokens:manage"]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": ""},
        {"name": "   "},
        {"name": 5},
        {"name": "x" * 129},
        {"name": "bell\x07"},  # control characters (`token_rules`, also the vault's rule)
        {"name": "x", "scopes": ["root"]},
        {"name": "x", "scopes": "llm:invoke"},
        {"name": "x", "scopes": []},
        {"name": "x", "expires_in": 0},
        {"name": "x", "expires_in": 10 * 365 * 24 * 3600 + 1},  # over 10 years
        {"name": "x", "expires_in": "60"},
        {"name": "x", "expires_in": True},
    ],
)
async def test_bad_create_requests_are_400(stack: Stack, alice: Minted, body: object) -> None:
    response = await stack.client.post(TOKENS, headers=alice.bearer(), json=body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_argument"


async def test_revoke(stack: Stack, alice: Minted) -> None:
    other = await stack.mint("alice", name="other")
    response = await stack.client.delete(f"{TOKENS}/{other.id}", headers=alice.bearer())
    assert response.status_code == 200
    revoked = response.json()["response"]
    assert revoked["id"] == other.id and revoked["revoked_at"] is not None
    assert (await stack.client.get(CREDS, headers=other.bearer())).status_code == 401
    # Revoking twice succeeds; an unknown id is 404.
    response = await stack.client.delete(f"{TOKENS}/{other.id}", headers=alice.bearer())
    assert response.status_code == 200
    response = await stack.client.delete(f"{TOKENS}/tok_doesnotexist", headers=alice.bearer())
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "token_not_found"


# -- lineage (SPEC 4.8): a token minted over REST never outlives its creator, dies with it ----


async def _post(stack: Stack, headers: dict[str, str], **body: object) -> dict[str, object]:
    response = await stack.client.post(TOKENS, headers=headers, json={"name": "child", **body})
    assert response.status_code == 201, response.text
    created: dict[str, object] = response.json()["response"]
    return created


def _bearer(created: dict[str, object]) -> dict[str, str]:
    return {"Authorization": f"Bearer {created['token']}"}


async def _listed_expiry(stack: Stack, minted: Minted, token_id: str) -> str | None:
    listed = await stack.client.get(TOKENS, headers=minted.bearer())
    by_id = {t["id"]: t for t in listed.json()["response"]["tokens"]}
    expiry: str | None = by_id[token_id]["expires_at"]
    return expiry


async def test_a_child_never_outlives_the_token_that_minted_it(stack: Stack) -> None:
    parent = await stack.mint("alice", expires_in=3600)
    parent_expiry = await _listed_expiry(stack, parent, parent.id)
    assert parent_expiry is not None
    longer = await _post(stack, parent.bearer(), expires_in=30 * 86400)
    assert longer["expires_at"] is not None and str(longer["expires_at"]) <= parent_expiry
    # No `expires_in`: the child gets its parent's expiry, not "never".
    unset = await _post(stack, parent.bearer())
    assert unset["expires_at"] == parent_expiry
    # A grandchild minted by the child is capped the same way.
    grandchild = await _post(stack, _bearer(unset))
    assert grandchild["expires_at"] == parent_expiry


async def test_revoking_a_token_revokes_what_it_minted(stack: Stack) -> None:
    admin = await stack.mint("alice")
    parent = await stack.mint("alice")
    child = await _post(stack, parent.bearer())
    grandchild = await _post(stack, _bearer(child))
    for headers in (parent.bearer(), _bearer(child), _bearer(grandchild)):
        assert (await stack.client.get(CREDS, headers=headers)).status_code == 200  # cached

    response = await stack.client.delete(f"{TOKENS}/{parent.id}", headers=admin.bearer())
    assert response.status_code == 200

    for headers in (parent.bearer(), _bearer(child), _bearer(grandchild)):
        assert (await stack.client.get(CREDS, headers=headers)).status_code == 401
    assert (await stack.client.get(CREDS, headers=admin.bearer())).status_code == 200
    listed = await stack.client.get(TOKENS, headers=admin.bearer())
    revoked = {t["id"] for t in listed.json()["response"]["tokens"] if t["revoked_at"]}
    assert revoked == {parent.id, child["id"], grandchild["id"]}


async def test_a_token_cannot_widen_its_scopes_through_a_child(stack: Stack) -> None:
    manager = await stack.mint("alice", ["tokens:manage"])
    response = await stack.client.post(
        TOKENS,
        headers=manager.bearer(),
        json={"name": "wide", "scopes": list(ALL_SCOPES)},
    )
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "forbidden"
    for scope in ALL_SCOPES:
        assert (scope in error["message"]) is (scope != "tokens:manage")
    listed = await stack.client.get(TOKENS, headers=manager.bearer())
    assert [t["id"] for t in listed.json()["response"]["tokens"]] == [manager.id]
    child = await _post(stack, manager.bearer())
    assert child["scopes"] == ["tokens:manage"]
