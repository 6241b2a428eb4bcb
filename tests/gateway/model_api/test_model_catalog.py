"""`GET /v1/models` and `GET /v1/models/{model_id}` (`model_catalog.py`)."""

from __future__ import annotations

import anthropic
import grpc
import grpc.aio
import openai
import pytest
from aicreds.vault.v1 import providers_pb2

from tests.gateway.model_api.conftest import USER, Gateway, anthropic_client, openai_client
from tests.gateway.support.stub_backends import provider

# -- models --------------------------------------------------------------------------------


def test_models_of_all_providers_in_both_shapes(gw: Gateway) -> None:
    gw.providers.providers = {
        USER: [
            provider("openai", ["gpt-4", "text-embedding-3-small"]),
            provider("anthropic", ["claude-3.5-sonnet"], providers_pb2.PROVIDER_KIND_ANTHROPIC),
            provider("azure", ["gpt-4"]),
        ],
        "someone-else": [provider("theirs", ["secret-model"])],
    }
    with openai_client(gw) as client:
        models = client.models.list()
        assert [(m.id, m.owned_by, m.object) for m in models] == [
            ("claude-3.5-sonnet", "anthropic", "model"),
            ("gpt-4", "azure", "model"),
            ("text-embedding-3-small", "openai", "model"),
        ]
        assert client.models.retrieve("openai/gpt-4").owned_by == "openai"
        with pytest.raises(openai.NotFoundError, match="secret-model"):
            client.models.retrieve("secret-model")
    with anthropic_client(gw) as ac:
        page = ac.models.list()
        assert [m.id for m in page.data] == ["claude-3.5-sonnet", "gpt-4", "text-embedding-3-small"]
        assert ac.models.retrieve("claude-3.5-sonnet").id == "claude-3.5-sonnet"


def test_models_when_the_vault_is_down(gw: Gateway) -> None:
    gw.providers.failure = (grpc.StatusCode.UNAVAILABLE, "connection refused", None)
    with openai_client(gw) as client, pytest.raises(openai.InternalServerError, match="vault"):
        client.models.list()
    with (
        anthropic_client(gw) as ac,
        pytest.raises(anthropic.ServiceUnavailableError, match="vault"),
    ):
        ac.models.list()
