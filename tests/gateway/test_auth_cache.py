"""The authentication cache: a user's answers are found through an index, so forgetting one
user (a revocation, from any replica through the feed) costs that user's entries, not a scan of
the whole cache; eviction and forgetting keep the index exact."""

from __future__ import annotations

from aicreds.vault.v1 import auth_pb2

from services.gateway.auth import Authenticator, AuthMethod, PresentedCredential
from services.gateway.observability import method_label


class CountingVault:
    """Answers every token as valid for the user named in it (`user:n`)."""

    def __init__(self) -> None:
        self.calls = 0

    async def authenticate(
        self, *, token: str | None = None, session: str | None = None
    ) -> auth_pb2.AuthenticateResponse:
        self.calls += 1
        secret = token or session or ""
        return auth_pb2.AuthenticateResponse(
            authenticated=True, user_id=secret.split(":")[0], token_id="tok_" + secret,
            token_prefix="sk-aic-x", scopes=["credentials:read"],
        )  # fmt: skip


def _token(user: str, n: int) -> PresentedCredential:
    return PresentedCredential(AuthMethod.BEARER, f"{user}:{n:04d}")


async def test_forgetting_a_user_drops_exactly_their_answers() -> None:
    vault = CountingVault()
    auth = Authenticator(vault, cache_ttl=60, max_entries=1000)
    for n in range(200):
        for user in ("alice", "bob", "carol"):
            await auth.authenticate(_token(user, n))
    assert vault.calls == 600
    auth.forget_user("bob")
    auth.forget_user("nobody")  # nothing cached: nothing to do
    for n in range(200):
        await auth.authenticate(_token("alice", n))
        await auth.authenticate(_token("carol", n))
    assert vault.calls == 600  # alice's and carol's answers kept
    for n in range(200):
        await auth.authenticate(_token("bob", n))
    assert vault.calls == 800  # bob's asked again
    assert auth._by_user.keys() == {"alice", "bob", "carol"}
    assert sum(len(keys) for keys in auth._by_user.values()) == len(auth._cache) == 600


async def test_evicted_and_forgotten_answers_leave_the_index() -> None:
    auth = Authenticator(CountingVault(), cache_ttl=60, max_entries=50)
    for n in range(120):
        await auth.authenticate(_token(f"user{n % 7}", n))
    assert len(auth._cache) == 50
    indexed = {key for keys in auth._by_user.values() for key in keys}
    assert indexed == set(auth._cache)
    first = next(iter(auth._cache))
    auth.forget_cache_key(first)
    assert first not in {key for keys in auth._by_user.values() for key in keys}
    assert auth.forget_all() == 49
    assert auth._by_user == {}


def test_an_unusual_http_method_is_one_label() -> None:
    assert [method_label(m) for m in ("GET", "POST", "PROPFIND", "X" * 100)] == [
        "GET", "POST", "_OTHER", "_OTHER",
    ]  # fmt: skip
