"""OpenAI-compatible endpoints: every `/v1/*` path, passed through the router (SPEC 2.6).

With `base_url=http://HOST/v1` the official `openai` SDK (and LangChain's `ChatOpenAI`) works
unchanged: `POST /v1/chat/completions`, `/v1/embeddings`, `/v1/responses`, ... go to the
provider that serves the body's `model`; errors come in OpenAI's shape. The pass-through also
dispatches the two `/v1` families that are not OpenAI calls: `GET /v1/models/{id}` (answered
from the user's providers) and `/v1/messages/...` (Anthropic's shape).
"""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import Response

from services.gateway.errors import ApiError
from services.gateway.llm.anthropic_routes import AnthropicCalls
from services.gateway.llm.calls import LlmBackend, invoke, openai_upstream_path
from services.gateway.llm.errors import openai_error_body, openai_error_response
from services.gateway.llm.model_routes import ModelCatalog

MODELS_PREFIX = "/v1/models/"
MESSAGES_PREFIX = "/v1/messages/"


def openai_stream_error_event(error: ApiError) -> bytes:
    """An SSE event the openai SDK raises `APIError` for, ending a broken stream."""
    return f"data: {json.dumps(openai_error_body(error))}\n\n".encode()


class OpenAiCalls:
    def __init__(self, backend: LlmBackend) -> None:
        self._backend = backend
        self._catalog = ModelCatalog(backend)
        self._anthropic = AnthropicCalls(backend)

    async def call(self, request: Request) -> Response:
        """One OpenAI API call (`POST /v1/chat/completions`, `/v1/embeddings`, ...)."""
        return await invoke(
            request,
            self._backend,
            render_error=openai_error_response,
            upstream_path=openai_upstream_path,
            stream_error_event=openai_stream_error_event,
        )

    async def pass_through(self, request: Request) -> Response:
        """Any `/v1/*` path no other route took."""
        path: str = request.url.path
        if request.method == "GET" and path.startswith(MODELS_PREFIX):
            return await self._catalog.retrieve_model(request, path[len(MODELS_PREFIX) :])
        if path.startswith(MESSAGES_PREFIX):
            return await self._anthropic.messages(request)
        return await self.call(request)
