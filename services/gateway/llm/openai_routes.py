"""OpenAI-compatible endpoints: every `/v1/*` path, passed through the router (SPEC 2.6).

With `base_url=http://HOST/v1` the official `openai` SDK (and LangChain's `ChatOpenAI`) works
unchanged: `POST /v1/chat/completions`, `/v1/embeddings`, `/v1/responses`, ... go to the
provider that serves the body's `model`; errors come in OpenAI's shape. Which paths reach here
is the route table's business (`endpoints.py`).
"""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import Response

from services.gateway.errors import ApiError
from services.gateway.llm.calls import LlmBackend, invoke, openai_upstream_path
from services.gateway.llm.errors import openai_error_body, openai_error_response


def openai_stream_error_event(error: ApiError) -> bytes:
    """An SSE event the openai SDK raises `APIError` for, ending a broken stream."""
    return f"data: {json.dumps(openai_error_body(error))}\n\n".encode()


class OpenAiCalls:
    def __init__(self, backend: LlmBackend) -> None:
        self._backend = backend

    async def call(self, request: Request) -> Response:
        """One OpenAI API call (`POST /v1/chat/completions`, `/v1/embeddings`, ...)."""
        return await invoke(
            request,
            self._backend,
            render_error=openai_error_response,
            upstream_path=openai_upstream_path,
            stream_error_event=openai_stream_error_event,
        )
