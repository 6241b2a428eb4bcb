"""The browser UI (SPEC 2.8, issue 13): static files under `/ui/`, a client of the REST API.

The UI is plain HTML, native ES modules and one CSS file in `static/`, served as they are (no
build step, no framework, no vendored library). It talks to the gateway only through the public
REST v2 API with the session cookie of SPEC 2.5, so this module adds no endpoint of its own:

    GET /                  307 to /ui/
    GET /ui                307 to /ui/
    GET /ui/{path:path}    a file of static/ (`/ui/` is index.html)

Every answer under `/ui/` carries the security headers of `SECURITY_HEADERS` (a strict
Content-Security-Policy with no inline script or style, no framing, no referrer, no sniffing);
index.html is `Cache-Control: no-store`, the other files are revalidated (`no-cache`).

A `Route` with a literal first segment rather than a `Mount`: the gateway's `RouteTable`
indexes it under `ui` (a `Mount` would be tried on every path), and the metrics and access log
label every file with the one template `/ui/{path:path}`, never the client's path.
"""

from __future__ import annotations

import json
from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

STATIC_DIR = Path(__file__).parent / "static"
UI_PATH = "/ui/"

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}
_ENCODED_HEADERS = [
    (name.lower().encode("latin-1"), value.encode("latin-1"))
    for name, value in SECURITY_HEADERS.items()
]
_NOT_FOUND = {404: "not_found", 405: "method_not_allowed"}


class SecuredStaticFiles:
    """`StaticFiles` over `static/` with the security and cache headers added to every answer.

    A missing file (404) or a method other than GET/HEAD (405) is answered here, in the API's
    error shape and with the same headers, rather than left to the gateway's edge layer.
    """

    def __init__(self, directory: Path = STATIC_DIR) -> None:
        self._files = StaticFiles(directory=directory, html=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        file_path = "/" + str(scope.get("path_params", {}).get("path", ""))
        is_index = file_path.endswith("/") or file_path.endswith("/index.html")
        cache = b"no-store" if is_index else b"no-cache"
        child = {**scope, "path": file_path, "root_path": ""}

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (name, value)
                    for name, value in message.get("headers", ())
                    if name.lower() != b"cache-control"
                ]
                headers += [*_ENCODED_HEADERS, (b"cache-control", cache)]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self._files(child, receive, send_secured)
        except HTTPException as exc:
            status = exc.status_code
            body = {
                "error": {
                    "code": _NOT_FOUND.get(status, "error"),
                    "message": "no such file" if status == 404 else "method not allowed",
                }
            }
            response = Response(
                json.dumps(body),
                status_code=status,
                media_type="application/json",
                headers={**SECURITY_HEADERS, "Cache-Control": "no-store", **(exc.headers or {})},
            )
            await response(scope, receive, send)


async def _to_ui(request: Request) -> Response:
    return RedirectResponse(UI_PATH, status_code=307, headers=SECURITY_HEADERS)


def ui_routes() -> list[Route]:
    """The UI's routes, to be added after the API's (they shadow none of them)."""
    return [
        Route("/", _to_ui, methods=["GET", "HEAD"], include_in_schema=False),
        Route("/ui", _to_ui, methods=["GET", "HEAD"], include_in_schema=False),
        Route("/ui/{path:path}", SecuredStaticFiles(), include_in_schema=False),
    ]
