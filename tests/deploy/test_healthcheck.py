"""`python -m services.healthcheck`: the compose health check and devtools.run's readiness probe."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from services.healthcheck import main


@pytest.fixture
def health_server() -> Iterator[tuple[str, health.HealthServicer]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        server.stop(None).wait()


def test_grpc_serving_not_serving_and_unknown_service(
    health_server: tuple[str, health.HealthServicer], capsys: pytest.CaptureFixture[str]
) -> None:
    target, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    assert main([target]) == 0
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert main([target]) == 1
    assert "NOT_SERVING" in capsys.readouterr().err
    assert main([target, "--service", "aicreds.nope.v1.Nope"]) == 1
    assert "NOT_FOUND" in capsys.readouterr().err


def test_unreachable_server_is_unhealthy_quickly(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["127.0.0.1:1", "--timeout", "0.5"]) == 1
    assert "UNAVAILABLE" in capsys.readouterr().err


def _http_server(status: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.parametrize(("status", "code"), [(200, 0), (503, 1)])
def test_http_readiness(status: int, code: int) -> None:
    server = _http_server(status)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/readyz"
        # As docker-compose runs it: a separate process, judged by its exit status.
        result = subprocess.run(
            [sys.executable, "-m", "services.healthcheck", url], capture_output=True, timeout=30
        )
        assert result.returncode == code, result.stderr
    finally:
        server.shutdown()
        server.server_close()
