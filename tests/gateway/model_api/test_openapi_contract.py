"""Schemathesis against the `/v1` operations of the live `/openapi.json`, behind the fake upstream.

The REST v2 contract test (tests/gateway) skips `/v1`, since a model call needs an upstream;
here one is running, so every generated call gets a documented answer and none a 5xx.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.background import BackgroundLoop
from tests.support.contract import CHECKS, Operation, run_contract
from tests.support.fake_upstream import FakeUpstream
from tests.support.stack import LlmStack, llm_stack

EXAMPLES_PER_OPERATION = 25
# A path each pass-through is called with, with a served model, besides the generated ones.
SERVED_PATHS = {"/v1/{path}": "chat/completions", "/v1/messages/{path}": "count_tokens"}


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream) -> Iterator[LlmStack]:
    servers = BackgroundLoop()
    try:
        yield servers.enter(llm_stack(tmp_path_factory.mktemp("contract"), upstream))
    finally:
        servers.close()


def test_generated_model_calls_get_documented_answers(
    live: LlmStack, upstream: FakeUpstream
) -> None:
    auth = {"Authorization": f"Bearer {live.tokens.invoke}"}

    def call_served_models(operation: Operation) -> None:
        # Generated models are almost never served; these are, and stream or not.
        anthropic = operation.path.startswith("/v1/messages")
        model = "claude-3.5-sonnet" if anthropic else "gpt-4"
        path = SERVED_PATHS.get(operation.path)
        parameters = {"path": path} if path else {}
        if operation.method.upper() == "POST":
            for stream in (False, True):
                case = operation.Case(
                    path_parameters=parameters,
                    body={"model": model, "stream": stream, "messages": []},
                )
                case.call_and_validate(base_url=live.url, headers=auth, checks=CHECKS)
        if operation.path == "/v1/models/{model_id}":
            case = operation.Case(path_parameters={"model_id": "openai/gpt-4"})
            response = case.call_and_validate(base_url=live.url, headers=auth, checks=CHECKS)
            assert response.json()["id"] == "openai/gpt-4"

    run = run_contract(
        live.url,
        auth,
        include=lambda path: path.startswith("/v1/"),
        examples_per_operation=EXAMPLES_PER_OPERATION,
        after_each=call_served_models,
    )
    # /v1/models, /v1/models/{model_id}, three POSTs, and five methods of each pass-through.
    assert run.operations == 15
    assert run.cases >= 15 * 10
    # Some generated calls named a served model and went all the way to the upstream.
    assert {r.path for r in upstream.requests} >= {"/v1/chat/completions", "/v1/messages"}
