"""A container health probe: `python -m services.healthcheck TARGET`.

The image has no grpc_health_probe and no curl, so this module is the health check of
docker-compose (and of `make run` while it waits for the services):

    python -m services.healthcheck 127.0.0.1:50051            # gRPC grpc.health.v1 Check
    python -m services.healthcheck http://127.0.0.1:8080/readyz  # HTTP, any 2xx is healthy

Exit status 0 when healthy, 1 otherwise; one line on stderr says why it is not.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc


def grpc_serving(
    target: str,
    *,
    service: str = "",
    timeout: float = 2.0,
    tls_ca: Path | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
) -> str | None:
    """None if `target` reports SERVING for `service`, else why not."""
    if tls_ca is None:
        channel = grpc.insecure_channel(target)
    else:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=tls_ca.read_bytes(),
            private_key=tls_key.read_bytes() if tls_key else None,
            certificate_chain=tls_cert.read_bytes() if tls_cert else None,
        )
        channel = grpc.secure_channel(target, credentials)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as err:
            code = err.code() if isinstance(err, grpc.Call) else None
            return f"{target}: health check failed ({code.name if code else 'error'})"
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        return f"{target}: {status}"
    return None


def http_healthy(url: str, *, timeout: float = 2.0) -> str | None:
    """None if GET `url` answers 2xx, else why not."""
    try:
        response = httpx.get(url, timeout=timeout)
    except httpx.HTTPError as err:
        return f"{url}: {type(err).__name__}"
    if not response.is_success:
        return f"{url}: HTTP {response.status_code}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.healthcheck",
        description="Exit 0 if a gRPC server (host:port) or an HTTP URL is healthy.",
    )
    parser.add_argument("target", help="host:port of a gRPC server, or an http(s):// URL")
    parser.add_argument("--service", default="", help="gRPC service name ('' = the server)")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds (default 2)")
    parser.add_argument("--tls-ca", type=Path, help="CA bundle: use TLS to the gRPC server")
    parser.add_argument("--tls-cert", type=Path, help="client certificate for mutual TLS")
    parser.add_argument("--tls-key", type=Path, help="client key for mutual TLS")
    args = parser.parse_args(argv)
    if args.target.startswith(("http://", "https://")):
        problem = http_healthy(args.target, timeout=args.timeout)
    else:
        problem = grpc_serving(
            args.target,
            service=args.service,
            timeout=args.timeout,
            tls_ca=args.tls_ca,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
        )
    if problem is not None:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
