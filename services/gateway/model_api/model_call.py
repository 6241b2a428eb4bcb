"""One model call: authenticate, read the body, ask the router, relay its answer.

A call whose body asks for `"stream": true` is relayed from the router's streaming `Invoke` as
it arrives (`stream_relay.RouterRelay`); any other is answered from `InvokeBuffered`, the whole
answer in one message (`buffered_answer.BufferedAnswer`), which costs both sides less.

`LlmBackend` is everything the model endpoints need from the gateway: its admission (which
authenticates, rate-limits and checks the scope), the router stub and its buffered calls (on
long-lived streams, `router_streams`), the vault's provider list and the limits. The two
vendors (`OPENAI`, `ANTHROPIC`) differ only in where their SDK's base URL stops and in how
errors look; `model_call(backend, vendor)` is the route handler for either.

What goes to the router (SPEC 2.6): the body's bytes untouched; the `model` read from it; the
HTTP method; the path as the vendor's SDK appends it to its own `base_url`; the query; and only
the allowlisted client headers — never the client's `Authorization`, `x-api-key` or cookies (the
router enforces the same list).

A provider's `base_url` is therefore what one would pass to that vendor's SDK: the OpenAI SDK's
ends in `/v1` (`https://api.openai.com/v1`) and appends `/chat/completions`, so the gateway's
OpenAI paths lose their `/v1`; the Anthropic SDK's does not (`https://api.anthropic.com`) and
appends `/v1/messages`, so Anthropic paths are sent whole.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aicreds.router.v1 import router_pb2
from aicreds.vault.v1 import providers_pb2
from starlette.requests import Request
from starlette.responses import Response

from services.common.forwarded_headers import forwarded_client_headers
from services.gateway.endpoint_table import read_body
from services.gateway.errors import ApiError
from services.gateway.model_api.buffered_answer import BufferedAnswer
from services.gateway.model_api.call_options import read_call_options_off_loop
from services.gateway.model_api.stream_relay import ErrorResponse, RouterRelay, StreamErrorEvent
from services.gateway.model_api.vendor_errors import (
    anthropic_error_response,
    anthropic_stream_error_event,
    openai_error_response,
    openai_stream_error_event,
)
from services.gateway.router_streams import BufferedCall, StreamCall

API_PREFIX = "/v1"


@dataclass(frozen=True)
class LlmPrincipal:
    """Who is calling, and the headers their admission adds to every answer."""

    user_id: str
    response_headers: Mapping[str, str] = field(default_factory=dict)


class LlmAuthenticator(Protocol):
    async def __call__(self, request: Request) -> LlmPrincipal:
        """Admit the request with scope `llm:invoke`, counting it against rate limits (and
        record the admission in the request's scope, as `Admission.admit` does, so that an
        error answer carries its headers).

        Raises:
            ApiError: 401, 403 or 429, with the headers the answer must carry.
        """
        ...


@dataclass(frozen=True)
class LlmBackend:
    """What the model endpoints use of the gateway (wired by `services.gateway.app`)."""

    authenticate: LlmAuthenticator
    # A streamed call: `RouterClient.invoke_stream` (request, timeout in seconds).
    invoke_stream: Callable[[router_pb2.InvokeRequest, float], StreamCall]
    # A non-streamed call: `RouterClient.invoke_buffered` (request, timeout in seconds).
    invoke_buffered: Callable[[router_pb2.InvokeBufferedRequest, float], BufferedCall]
    # A user's providers; a failure raises the mapped ApiError.
    list_providers: Callable[[str], Awaitable[Sequence[providers_pb2.Provider]]]
    router_timeout: float = 300.0
    # GATEWAY_LLM_MAX_BODY: a larger limit than REST v2's.
    max_body: int = 32 * 1024 * 1024


def forwarded_headers(request: Request) -> list[router_pb2.Header]:
    """The client headers on `services.common.forwarded_headers`' allowlist, read from the ASGI
    scope's raw (lower-case) pairs."""
    return [
        router_pb2.Header(name=name.decode("latin-1"), value=value.decode("latin-1"))
        for name, value in forwarded_client_headers(request.scope["headers"])
    ]


#: Characters after which Starlette's `request.url.path` is not the scope's path as it is:
#: it escapes `?`, `#` and `\`, and URL splitting drops tabs and line breaks.
_UNUSUAL_PATH = re.compile(r"[?#\\\t\r\n]")


def request_path(request: Request) -> str:
    """`request.url.path`, without building the whole URL for the usual path."""
    path: str = request.scope["path"]
    if _UNUSUAL_PATH.search(path) is None and not path.startswith("//"):
        return path
    unusual: str = request.url.path  # spelled exactly as Starlette would
    return unusual


def request_query(request: Request) -> str:
    """`request.url.query`: the raw query string (a parsed request line holds no `#`)."""
    raw: bytes = request.scope.get("query_string", b"")
    if not raw:
        return ""
    if b"#" in raw or b"\t" in raw or b"\r" in raw or b"\n" in raw:
        unusual: str = request.url.query
        return unusual
    return raw.decode()


def openai_upstream_path(request: Request) -> str:
    """The path after `/v1`: OpenAI base URLs end with the version (`.../v1`)."""
    path = request_path(request)
    return path[len(API_PREFIX) :] if path.startswith(API_PREFIX + "/") else path


def anthropic_upstream_path(request: Request) -> str:
    """The whole path: Anthropic base URLs stop at the host (`https://api.anthropic.com`)."""
    return request_path(request)


UpstreamPath = Callable[[Request], str]


@dataclass(frozen=True)
class Vendor:
    """What differs between the OpenAI and the Anthropic endpoints."""

    render_error: ErrorResponse
    stream_error_event: StreamErrorEvent
    upstream_path: UpstreamPath

    def route_errors(self, request: Request, error: ApiError) -> Response:
        """The routes' `ErrorRenderer`: every error of a call in this vendor's shape."""
        return self.render_error(error)


#: `base_url=http://HOST/v1`: `/v1/chat/completions`, `/v1/embeddings`, ... in OpenAI's shapes.
OPENAI = Vendor(openai_error_response, openai_stream_error_event, openai_upstream_path)
#: `base_url=http://HOST`: `/v1/messages` and its sub-paths in Anthropic's shapes.
ANTHROPIC = Vendor(anthropic_error_response, anthropic_stream_error_event, anthropic_upstream_path)


def model_call(backend: LlmBackend, vendor: Vendor) -> Callable[[Request], Awaitable[Response]]:
    """The route handler of a model call in `vendor`'s style."""

    async def handle(request: Request) -> Response:
        return await invoke(request, backend, vendor)

    return handle


async def invoke(request: Request, backend: LlmBackend, vendor: Vendor) -> Response:
    """Serve one model call through the router.

    A failure before the router answers is raised; the middleware renders it with the route's
    renderer (`Vendor.route_errors`). The router's own errors are rendered by the answer.
    """
    principal = await backend.authenticate(request)
    headers = principal.response_headers
    body = await read_body(request, backend.max_body)
    options = await read_call_options_off_loop(body, principal.user_id)
    render_error = vendor.render_error
    call: dict[str, Any] = {
        "user_id": principal.user_id,
        "model": options.model,
        "method": request.method,
        "path": vendor.upstream_path(request),
        "query": request_query(request),
        "headers": forwarded_headers(request),
        "body": body,
    }
    # The router's channel adds the caller token and this request's id to the call's metadata
    # (a call on a stream carries the id in its message).
    if not options.stream:
        return BufferedAnswer(
            backend.invoke_buffered(
                router_pb2.InvokeBufferedRequest(call=call), backend.router_timeout
            ),
            render_error=render_error,
            extra_headers=headers,
        )
    return RouterRelay(
        backend.invoke_stream(router_pb2.InvokeRequest(**call), backend.router_timeout),
        render_error=render_error,
        stream_error_event=vendor.stream_error_event,
        extra_headers=headers,
    )
