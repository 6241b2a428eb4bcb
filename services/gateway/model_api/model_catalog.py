"""`GET /v1/models` and `GET /v1/models/{model_id}`: the models of all the user's providers.

Both SDKs list models at the same path; a request carrying `anthropic-version` (the anthropic
SDK always sends it) gets Anthropic's list and error shapes (`catalog_errors`), any other
OpenAI's. The lists are built from the providers' configurations (`listed_models`,
`find_model`); nothing is asked upstream.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from services.gateway.errors import ApiError
from services.gateway.model_api.model_call import LlmBackend
from services.gateway.model_api.vendor_errors import anthropic_error_response, openai_error_response


def speaks_anthropic(request: Request) -> bool:
    return "anthropic-version" in request.headers


#: `(provider name, its models)` pairs, sorted by provider name as the vault lists them.
ProviderModels = list[tuple[str, list[str]]]

#: `created` of every listed model: providers record no date, and the SDKs need an integer.
MODEL_CREATED = 0


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


def catalog_errors(request: Request, error: ApiError) -> Response:
    """The catalog routes' `ErrorRenderer`: Anthropic's shape for the anthropic SDK."""
    if speaks_anthropic(request):
        return anthropic_error_response(error)
    return openai_error_response(error)


class ModelCatalog:
    """The handlers answering from the user's provider configurations (no upstream call).

    Errors are raised; the middleware renders them with `catalog_errors`.
    """

    def __init__(self, backend: LlmBackend) -> None:
        self._backend = backend

    async def list_models(self, request: Request) -> Response:
        providers, headers = await self._providers(request)
        models = listed_models(providers)
        if speaks_anthropic(request):
            return JSONResponse(anthropic_model_list(models), headers=dict(headers))
        return JSONResponse(openai_model_list(models), headers=dict(headers))

    async def retrieve_model(self, request: Request) -> Response:
        """`GET /v1/models/{model_id}`; the id may hold slashes (`provider/model`)."""
        providers, headers = await self._providers(request)
        model = find_model(providers, str(request.path_params["model_id"]))
        if speaks_anthropic(request):
            return JSONResponse(model.anthropic_shape(), headers=dict(headers))
        return JSONResponse(model.openai_shape(), headers=dict(headers))

    async def _providers(self, request: Request) -> tuple[ProviderModels, Mapping[str, str]]:
        principal = await self._backend.authenticate(request)
        providers = await self._backend.list_providers(principal.user_id)
        return [(p.name, list(p.models)) for p in providers], principal.response_headers
