"""Anthropic-compatible endpoint: `POST /v1/messages` (and its sub-paths) through the router.

With `base_url=http://HOST` the official `anthropic` SDK works unchanged; errors come in
Anthropic's shape, and a stream that breaks after it started ends with an `error` event, which
the SDK raises as an `APIStatusError`.
"""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import Response

from services.gateway.errors import ApiError
from services.gateway.llm.calls import LlmBackend, anthropic_upstream_path, invoke
from services.gateway.llm.errors import anthropic_error_body, anthropic_error_response


def anthropic_stream_error_event(error: ApiError) -> bytes:
    """The `error` event Anthropic sends when a stream fails after it started."""
    return f"event: error\ndata: {json.dumps(anthropic_error_body(error))}\n\n".encode()


class AnthropicCalls:
    def __init__(self, backend: LlmBackend) -> None:
        self._backend = backend

    async def messages(self, request: Request) -> Response:
        return await invoke(
            request,
            self._backend,
            render_error=anthropic_error_response,
            upstream_path=anthropic_upstream_path,
            stream_error_event=anthropic_stream_error_event,
        )
