"""`GET /v1/models` and `GET /v1/models/{model_id}`: the models of all the user's providers.

Both SDKs list models at the same path; a request carrying `anthropic-version` (the anthropic
SDK always sends it) gets Anthropic's list and error shapes (`catalog_errors`), any other
OpenAI's. The lists are built from the providers' configurations (`listed_models`,
`find_model`); nothing is asked upstream. Which provider serves a model is decided by
`services.common.model_selection`, the rule the vault's `Resolve` applies to a call, so the
catalog says what a call would do.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from aicreds.vault.v1 import providers_pb2
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from services.common.credential_rules import describe
from services.common.model_selection import model_owners, select_provider
from services.gateway.errors import ApiError
from services.gateway.model_api.model_call import LlmBackend
from services.gateway.model_api.vendor_errors import anthropic_error_response, openai_error_response


def speaks_anthropic(request: Request) -> bool:
    return "anthropic-version" in request.headers


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


def listed_models(providers: Iterable[providers_pb2.Provider]) -> list[ListedModel]:
    """Every model the user's providers list, each name once, under the provider a call naming
    it goes to (`model_selection.model_owners`)."""
    return [
        ListedModel(id=model, provider=owner.name)
        for model, owner in model_owners(providers).items()
    ]


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


def find_model(providers: Sequence[providers_pb2.Provider], model_id: str) -> ListedModel:
    """The model `model_id` under the provider a call naming it goes to
    (`model_selection.select_provider`); 404 `model_not_found` when a call would get 404."""
    choice = select_provider(model_id, providers)
    if choice is None:
        raise ApiError(
            404,
            "model_not_found",
            f"model {describe(model_id)} is not served by any of the user's providers",
        )
    return ListedModel(id=model_id, provider=choice.provider.name)


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

    async def _providers(
        self, request: Request
    ) -> tuple[Sequence[providers_pb2.Provider], Mapping[str, str]]:
        principal = await self._backend.authenticate(request)
        providers = await self._backend.list_providers(principal.user_id)
        return providers, principal.response_headers
