"""What the gateway reads of a model call, and the model lists it answers.

The gateway never re-encodes a request body: it parses a copy only to read the top-level
`model` and `stream`, and forwards the original bytes. Choosing the provider from `model`
(SPEC 2.6: `provider/model` picks that provider, otherwise the provider listing the model) is the
vault's `Resolve`, reached through the router; the router rewrites `model` when it strips a
prefix. Here we only list models, for `GET /v1/models`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from services.gateway.errors import ApiError

#: `(provider name, its models)` pairs, sorted by provider name as the vault lists them.
ProviderModels = list[tuple[str, list[str]]]

#: `created` of every listed model: providers record no date, and the SDKs need an integer.
MODEL_CREATED = 0


@dataclass(frozen=True)
class CallOptions:
    """The two body fields the gateway reads."""

    model: str
    stream: bool


def read_call_options(body: bytes) -> CallOptions:
    """Read `model` and `stream` from a JSON request body.

    Raises:
        ApiError: 400 when the body is not a JSON object or names no model.
    """
    try:
        payload: Any = json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ApiError(400, "invalid_argument", "the request body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise ApiError(400, "invalid_argument", "the request body must be a JSON object")
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(
            400, "invalid_argument", "the request body must name a `model` (a non-empty string)"
        )
    return CallOptions(model=model, stream=payload.get("stream") is True)


@dataclass(frozen=True)
class ListedModel:
    """A model a user can call, and the provider that serves it under that name."""

    id: str
    provider: str

    def openai_shape(self) -> dict[str, object]:
        return {
            "id": self.id,
            "object": "model",
            "created": MODEL_CREATED,
            "owned_by": self.provider,
        }

    def anthropic_shape(self) -> dict[str, object]:
        return {
            "type": "model",
            "id": self.id,
            "display_name": self.id,
            "created_at": "1970-01-01T00:00:00Z",
        }


def listed_models(providers: Iterable[tuple[str, Iterable[str]]]) -> list[ListedModel]:
    """Every model of the user's providers, each name once.

    `providers` are `(name, models)` pairs sorted by name, as the vault lists them; when two
    providers list the same model, the first keeps the plain name (the other is still reachable
    as `provider/model`).
    """
    seen: set[str] = set()
    models: list[ListedModel] = []
    for provider, names in providers:
        for name in names:
            if name not in seen:
                seen.add(name)
                models.append(ListedModel(id=name, provider=provider))
    return models


def openai_model_list(models: Iterable[ListedModel]) -> dict[str, object]:
    return {"object": "list", "data": [model.openai_shape() for model in models]}


def anthropic_model_list(models: list[ListedModel]) -> dict[str, object]:
    data = [model.anthropic_shape() for model in models]
    return {
        "data": data,
        "has_more": False,
        "first_id": models[0].id if models else None,
        "last_id": models[-1].id if models else None,
    }


def find_model(providers: Sequence[tuple[str, Sequence[str]]], model_id: str) -> ListedModel:
    """The model `model_id` as a call would select it (SPEC 2.6); 404 `model_not_found`.

    `provider/model` names that provider's model, whatever it lists (as the vault's `Resolve`
    selects); a plain name is the first provider listing it.
    """
    prefix, slash, rest = model_id.partition("/")
    if slash and rest and any(name == prefix for name, _ in providers):
        return ListedModel(id=model_id, provider=prefix)
    for model in listed_models(providers):
        if model.id == model_id:
            return model
    raise ApiError(404, "model_not_found", f"The model `{model_id}` does not exist")
