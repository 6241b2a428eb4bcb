"""`POST /api/v2/users/me/ai-providers/{name}/test` against a scripted router on a real gRPC
server: the JSON of each outcome, `checked_at`, the 404 mapping, the scope, and that the user
whose provider is tested is the token's, whatever the request says."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import grpc
import grpc.aio
import pytest
from aicreds.router.v1 import router_pb2, router_pb2_grpc
from google.protobuf.timestamp_pb2 import Timestamp

from tests.support.stack import Minted, Stack, StackFactory, unused_address

TEST_URL = "/api/v2/users/me/ai-providers/{}/test"
CHECKED_AT = datetime(2026, 11, 27, 12, 0, 0, 500_000, tzinfo=UTC)


@dataclass
class CheckRouter(router_pb2_grpc.RouterServiceServicer):
    """Answers CheckProvider from `answers` (provider name -> reply); any other name is the
    router's NOT_FOUND with reason `provider_not_found`. Records each request and its
    metadata."""

    answers: dict[str, router_pb2.CheckProviderResponse] = field(default_factory=dict)
    requests: list[router_pb2.CheckProviderRequest] = field(default_factory=list)
    metadata: list[dict[str, str]] = field(default_factory=list)

    async def CheckProvider(  # noqa: N802 - the RPC's name
        self, request: router_pb2.CheckProviderRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.CheckProviderResponse:
        self.requests.append(request)
        self.metadata.append({k: str(v) for k, v in context.invocation_metadata() or ()})
        answer = self.answers.get(request.provider_name)
        if answer is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"provider {request.provider_name!r} not found",
                trailing_metadata=(("x-error-reason", "provider_not_found"),),
            )
            raise AssertionError("unreachable")
        return answer


@pytest.fixture
async def check_router() -> AsyncIterator[tuple[CheckRouter, str]]:
    server = grpc.aio.server()
    servicer = CheckRouter()
    router_pb2_grpc.add_RouterServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


@pytest.fixture
async def checked(
    gateway_stack: StackFactory, check_router: tuple[CheckRouter, str]
) -> tuple[Stack, CheckRouter]:
    servicer, address = check_router
    return await gateway_stack(router_addr=address), servicer


def reply(
    outcome: int, status: int, message: str, warnings: tuple[str, ...] = ()
) -> router_pb2.CheckProviderResponse:
    stamp = Timestamp()
    stamp.FromDatetime(CHECKED_AT)
    return router_pb2.CheckProviderResponse(
        outcome=outcome,  # type: ignore[arg-type]
        status=status,
        message=message,
        warnings=list(warnings),
        checked_at=stamp,
    )


OUTCOMES = [
    ("accepted", router_pb2.CHECK_OUTCOME_ACCEPTED, 200, "127.0.0.1 answered 200"),
    ("key_rejected", router_pb2.CHECK_OUTCOME_KEY_REJECTED, 401, "the upstream refused the key"),
    ("unreachable", router_pb2.CHECK_OUTCOME_UNREACHABLE, 0, "could not connect to 127.0.0.1"),
    ("refused_by_policy", router_pb2.CHECK_OUTCOME_REFUSED_BY_POLICY, 0, "10.0.0.1 is private"),
    ("upstream_error", router_pb2.CHECK_OUTCOME_UPSTREAM_ERROR, 503, "the upstream answered 503"),
    ("credential_missing", router_pb2.CHECK_OUTCOME_CREDENTIAL_MISSING, 0, "missing: org_id"),
]


@pytest.mark.parametrize(("outcome", "code", "status", "message"), OUTCOMES)
async def test_each_outcome_is_answered_as_documented(
    checked: tuple[Stack, CheckRouter], outcome: str, code: int, status: int, message: str
) -> None:
    stack, router = checked
    router.answers["openai"] = reply(code, status, message, ("Credential not found: org_id",))
    alice = await stack.mint("alice")
    response = await stack.client.post(TEST_URL.format("openai"), headers=alice.bearer(), json={})
    assert response.status_code == 200, response.text
    assert response.json() == {
        "response": {
            "provider": "openai",
            "outcome": outcome,
            "status": status,
            "message": message,
            "warnings": ["Credential not found: org_id"],
            "checked_at": "2026-11-27T12:00:00Z",
        }
    }


async def test_the_user_tested_for_is_the_tokens_whatever_the_request_says(
    checked: tuple[Stack, CheckRouter],
) -> None:
    stack, router = checked
    router.answers["openai"] = reply(router_pb2.CHECK_OUTCOME_ACCEPTED, 200, "ok")
    alice = await stack.mint("alice")
    response = await stack.client.post(
        TEST_URL.format("openai") + "?user_id=bob", headers=alice.bearer()
    )
    assert response.status_code == 200, response.text
    assert [(r.user_id, r.provider_name) for r in router.requests] == [("alice", "openai")]
    assert router.metadata[0]["authorization"].startswith("Bearer "), "the gateway's caller token"
    assert alice.token not in str(router.metadata), "the client's token never reaches the router"

    # The test takes no parameters: a body naming another user is refused, nothing is asked.
    response = await stack.client.post(
        TEST_URL.format("openai"), headers=alice.bearer(), json={"user_id": "bob"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_argument"
    assert len(router.requests) == 1


async def test_an_unknown_provider_is_404_provider_not_found(
    checked: tuple[Stack, CheckRouter],
) -> None:
    stack, _ = checked
    alice = await stack.mint("alice")
    response = await stack.client.post(TEST_URL.format("nope"), headers=alice.bearer(), json={})
    assert response.status_code == 404
    assert response.json() == {
        "error": {"code": "provider_not_found", "message": "provider 'nope' not found"}
    }


async def test_it_needs_providers_read(checked: tuple[Stack, CheckRouter]) -> None:
    stack, router = checked
    router.answers["openai"] = reply(router_pb2.CHECK_OUTCOME_ACCEPTED, 200, "ok")
    writer: Minted = await stack.mint("alice", ["credentials:read", "providers:write"])
    response = await stack.client.post(TEST_URL.format("openai"), headers=writer.bearer())
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"
    assert router.requests == []

    reader = await stack.mint("alice", ["providers:read"])
    response = await stack.client.post(TEST_URL.format("openai"), headers=reader.bearer())
    assert response.status_code == 200
    assert response.json()["response"]["outcome"] == "accepted"


async def test_a_reply_without_checked_at_is_stamped_now_and_no_outcome_is_500(
    checked: tuple[Stack, CheckRouter],
) -> None:
    stack, router = checked
    router.answers["bare"] = router_pb2.CheckProviderResponse(
        outcome=router_pb2.CHECK_OUTCOME_UNREACHABLE
    )
    router.answers["odd"] = router_pb2.CheckProviderResponse()
    alice = await stack.mint("alice")
    response = await stack.client.post(TEST_URL.format("bare"), headers=alice.bearer())
    stamped = response.json()["response"]["checked_at"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", stamped)
    age = datetime.now(UTC) - datetime.strptime(stamped, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert age.total_seconds() < 60

    response = await stack.client.post(TEST_URL.format("odd"), headers=alice.bearer())
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal"


async def test_an_absent_router_is_503(gateway_stack: StackFactory) -> None:
    stack = await gateway_stack(router_addr=unused_address(), router_timeout=2.0)
    alice = await stack.mint("alice")
    response = await stack.client.post(TEST_URL.format("openai"), headers=alice.bearer())
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "unavailable"
