"""A stand-in OTLP/HTTP collector for `BENCH_TRACING=true`: accepts `POST /v1/traces`,
counts what arrives and throws it away, on a thread of the bench process.

The services export to it as they would to a collector (protobuf over HTTP, in batches from
their own background thread), so a traced run pays for making, batching, encoding and sending
every span; only the collector's own work is left out.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class OtlpSink:
    """`with OtlpSink() as sink:` serves on 127.0.0.1 until the block ends."""

    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0
        lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a collector

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                size = int(self.headers.get("Content-Length", "0"))
                self.rfile.read(size)
                with lock:
                    sink.requests += 1
                    sink.bytes += size
                # An empty ExportTraceServiceResponse: all spans accepted.
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        """The value for `OTEL_EXPORTER_OTLP_ENDPOINT`."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> OtlpSink:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
