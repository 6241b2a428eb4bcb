"""`make demo`: the whole flow in one command, against a local fake OpenAI upstream.

1. starts a small OpenAI-compatible upstream on 127.0.0.1 that records what it receives;
2. starts vault, router and gateway as `make run` does, with state in a temporary directory
   and `ROUTER_EGRESS_ALLOW=127.0.0.1` so the router may reach that upstream;
3. stores the credential `openai_api_key` and a provider whose header is
   `Authorization: Bearer {{credential:openai_api_key}}` for the user `demo` over the REST API;
4. asks for a chat completion through the gateway with the official `openai` SDK, plain and
   streamed;
5. prints what the upstream received, the key masked, and checks that it got the substituted
   key and never the client's API token. Exit status 0 when every check holds.

No real API key is needed or used.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from openai import OpenAI

from devtools.run import Stack, StackError, build_config, create_api_token, prepare_state

# A made-up key: what the user stores, and what the upstream must receive.
DEMO_KEY = "sk-demo-7f3a9c1e5b2d4f60a8e1"
MODEL = "demo-model"
REPLY = "Hello from the fake upstream!"
CREDENTIAL_PATH = "/api/v2/users/me/ai-credentials/openai_api_key"
PROVIDERS_PATH = "/api/v2/users/me/ai-providers"


def mask(value: str) -> str:
    """First 3 and last 4 characters of a value of at least 16, else MASKED (SPEC 2.2)."""
    return f"{value[:3]}...{value[-4:]}" if len(value) >= 16 else "MASKED"


def mask_header(value: str) -> str:
    scheme, sep, secret = value.partition(" ")
    if sep and scheme.lower() in {"bearer", "basic"}:
        return f"{scheme} {mask(secret)}"
    return mask(value)


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes


class _Handler(BaseHTTPRequestHandler):
    """An OpenAI chat-completions look-alike; every request is recorded on the server."""

    protocol_version = "HTTP/1.1"
    server: RecordingUpstream

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            self.rfile.readline()
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_POST(self) -> None:
        body = self._read_body()
        self.server.record(Received("POST", self.path, list(self.headers.items()), body))
        if not self.path.endswith("/chat/completions"):
            self._send(404, "application/json", b'{"error":{"message":"not found"}}')
            return
        request = json.loads(body or b"{}")
        base = {"id": "chatcmpl-demo", "created": int(time.time()), "model": request.get("model")}
        if request.get("stream"):
            events = []
            for i, word in enumerate(REPLY.split(" ")):
                delta = {"role": "assistant"} if i == 0 else {}
                delta["content"] = word if i == 0 else " " + word
                choice = {"index": 0, "delta": delta, "finish_reason": None}
                events.append({**base, "object": "chat.completion.chunk", "choices": [choice]})
            done = {"index": 0, "delta": {}, "finish_reason": "stop"}
            events.append({**base, "object": "chat.completion.chunk", "choices": [done]})
            payload = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
            self._send(200, "text/event-stream", payload.encode())
            return
        message = {"role": "assistant", "content": REPLY}
        completion = {
            **base,
            "object": "chat.completion",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10},
        }
        self._send(200, "application/json", json.dumps(completion).encode())

    def _send(self, status: int, content_type: str, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class RecordingUpstream(ThreadingHTTPServer):
    """The fake upstream on 127.0.0.1 and an ephemeral port, serving from a thread."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def record(self, request: Received) -> None:
        with self._lock:
            self.received.append(request)

    def __enter__(self) -> RecordingUpstream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()


def _rest(client: httpx.Client, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.request(method, path, json=body)
    if not response.is_success:
        raise StackError(f"{method} {path}: HTTP {response.status_code} {response.text[:300]}")
    result: dict[str, Any] = response.json()["response"]
    return result


def run_flow(gateway_url: str, token: str, upstream: RecordingUpstream) -> list[str]:
    """Steps 3-5; returns the checks that failed (empty when the demo worked)."""
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=gateway_url, headers=auth, timeout=30) as rest:
        stored = _rest(rest, "PUT", CREDENTIAL_PATH, {"value": DEMO_KEY})
        print(f"3. PUT  {CREDENTIAL_PATH} -> {stored['key']} = {mask(stored['value'])}")
        provider = {
            "name": "local",
            "kind": "openai",
            "base_url": upstream.base_url,
            "headers": {"Authorization": ["Bearer {{credential:openai_api_key}}"]},
            "models": [MODEL],
            "on_missing_credential": "error",
        }
        saved = _rest(rest, "POST", PROVIDERS_PATH, provider)
        shown = saved.get("provider", saved).get("headers")
        print(f"   POST {PROVIDERS_PATH} -> 'local' at {upstream.base_url}")
        print(f"        headers as stored: {json.dumps(shown)}")

    client = OpenAI(base_url=gateway_url + "/v1", api_key=token, max_retries=0, timeout=30)
    messages: Any = [{"role": "user", "content": "Hello!"}]
    completion = client.chat.completions.create(model=MODEL, messages=messages)
    answer = completion.choices[0].message.content
    print(f'4. openai SDK chat.completions.create(model="{MODEL}") -> {answer!r}')
    stream = client.chat.completions.create(model=MODEL, messages=messages, stream=True)
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    print(f"   the same with stream=True -> {len(pieces)} chunks: {''.join(pieces)!r}")

    failures = []
    calls = [r for r in upstream.received if r.path.endswith("/chat/completions")]
    print(f"5. the upstream received {len(calls)} requests; the first:")
    if not calls:
        return ["the upstream received no chat completion"]
    first = calls[0]
    print(f"     {first.method} {first.path}")
    for name, value in first.headers:
        secret = name.lower() in {"authorization", "x-api-key", "api-key"}
        print(f"     {name.lower()}: {mask_header(value) if secret else value}")
    print(f"     body: {first.body.decode(errors='replace')}")
    for call in calls:
        headers = {n.lower(): v for n, v in call.headers}
        if headers.get("authorization") != f"Bearer {DEMO_KEY}":
            failures.append("the upstream did not receive the substituted key")
        if token in json.dumps(call.headers) or token.encode() in call.body:
            failures.append("the client's API token reached the upstream")
    if not failures:
        print(
            "   {{credential:openai_api_key}} was replaced by the stored key, and "
            "the client's API token never reached the upstream."
        )
    return failures


def main() -> int:
    with (
        tempfile.TemporaryDirectory(prefix="aicreds-demo-") as tmp,
        RecordingUpstream() as upstream,
    ):
        state = Path(tmp)
        print(f"1. fake OpenAI upstream at {upstream.base_url} (records what it receives)")
        environ = dict(os.environ)
        environ.update(
            STATE_DIR=str(state),
            VAULT_LISTEN="127.0.0.1:0",
            ROUTER_LISTEN="127.0.0.1:0",
            GATEWAY_LISTEN="127.0.0.1:0",
            ROUTER_EGRESS_ALLOW="127.0.0.1",
        )
        config = build_config(environ)
        prepare_state(config)
        log_path = state / "services.log"
        with log_path.open("wb") as log:
            stack = Stack(config, output=log)
            failures: list[str] = []
            try:
                stack.start()
                token = create_api_token(config, name="make-demo")
                print(
                    f"2. vault, router and gateway running; gateway {config.gateway_url}, user demo"
                )
                failures = run_flow(config.gateway_url, token, upstream)
            except Exception as err:  # the demo reports, then shows the services' log
                failures = [f"{type(err).__name__}: {err}"]
            finally:
                stopped_cleanly = stack.stop()
        if failures or not stopped_cleanly:
            sys.stderr.write(log_path.read_text(errors="replace")[-8000:])
            for failure in failures or ["a service did not stop cleanly"]:
                print(f"demo FAILED: {failure}", file=sys.stderr)
            return 1
    print("6. stopped everything. Demo OK.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
