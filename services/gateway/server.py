"""`aicreds-gateway`: run the gateway with uvicorn (uvloop event loop, httptools parser).

uvloop and httptools are uvicorn's fastest loop and HTTP/1.1 parser; the gateway's work per
request is small next to the gRPC hop, so the server's own overhead is what they save.
"""

from __future__ import annotations

import os
import sys

import uvicorn

from services.common.logging import configure_logging
from services.common.startup_heap import freeze_startup_heap
from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings


def main() -> None:
    try:
        settings = GatewaySettings.from_env(os.environ)
    except ValueError as err:
        print(f"aicreds-gateway: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging("gateway", settings.log_level)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.listen_host,
        port=settings.listen_port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,  # the gateway writes its own JSON access log
        log_config=None,
        server_header=False,
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
    )
    # The application is built; what its lifespan opens (a few channels) is small next to it.
    freeze_startup_heap()
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
