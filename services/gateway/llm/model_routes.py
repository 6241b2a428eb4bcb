"""`GET /v1/models` and `GET /v1/models/{model_id}`: the models of all the user's providers.

Both SDKs list models at the same path; a request carrying `anthropic-version` (the anthropic
SDK always sends it) gets Anthropic's list and error shapes, any other OpenAI's.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from services.gateway.errors import ApiError
from services.gateway.llm.calls import LlmBackend
from services.gateway.llm.errors import (
    anthropic_error_response,
    internal_error,
    openai_error_response,
)
from services.gateway.llm.model_selection import (
    ProviderModels,
    anthropic_model_list,
    find_model,
    listed_models,
    openai_model_list,
)


def speaks_anthropic(request: Request) -> bool:
    return "anthropic-version" in request.headers


class ModelCatalog:
    """The handlers answering from the user's provider configurations (no upstream call)."""

    def __init__(self, backend: LlmBackend) -> None:
        self._backend = backend

    async def list_models(self, request: Request) -> Response:
        try:
            providers, headers = await self._providers(request)
        except ApiError as error:
            return self._error(request, error)
        except Exception as err:
            return self._error(request, internal_error(err, route="/v1/models"))
        models = listed_models(providers)
        if speaks_anthropic(request):
            return JSONResponse(anthropic_model_list(models), headers=dict(headers))
        return JSONResponse(openai_model_list(models), headers=dict(headers))

    async def retrieve_model(self, request: Request) -> Response:
        """`GET /v1/models/{model_id}`; the id may hold slashes (`provider/model`)."""
        headers: Mapping[str, str] = {}
        try:
            providers, headers = await self._providers(request)
            model = find_model(providers, str(request.path_params["model_id"]))
        except ApiError as error:
            error.headers = {**headers, **error.headers}
            return self._error(request, error)
        except Exception as err:
            return self._error(request, internal_error(err, route="/v1/models/{model_id}"))
        if speaks_anthropic(request):
            return JSONResponse(model.anthropic_shape(), headers=dict(headers))
        return JSONResponse(model.openai_shape(), headers=dict(headers))

    async def _providers(self, request: Request) -> tuple[ProviderModels, Mapping[str, str]]:
        principal = await self._backend.authenticate(request)
        try:
            providers = await self._backend.list_providers(principal.user_id)
        except ApiError as error:
            error.headers = {**principal.response_headers, **error.headers}
            raise
        return [(p.name, list(p.models)) for p in providers], principal.response_headers

    @staticmethod
    def _error(request: Request, error: ApiError) -> Response:
        if speaks_anthropic(request):
            return anthropic_error_response(error)
        return openai_error_response(error)
