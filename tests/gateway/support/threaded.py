"""A real vault and gateway running in a background thread, for synchronous clients
(schemathesis drives the API with `requests` from the test's own thread)."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any

from aicreds.vault.v1 import auth_pb2, auth_pb2_grpc

from services.gateway.app import create_app
from tests.gateway.conftest import VAULT_CALLERS, base_settings, running_router
from tests.support.asgi import serve_asgi
from tests.support.vault import running_vault


class ThreadedStack:
    """`with ThreadedStack(tmp_path) as stack:` gives `stack.url` and a full-scope `stack.token`."""

    def __init__(self, tmp_path: Path, user_id: str = "schemathesis", **overrides: Any) -> None:
        self._tmp_path = tmp_path
        self._user_id = user_id
        self._overrides = overrides
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gateway-stack", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.url = ""
        self.token = ""

    def __enter__(self) -> ThreadedStack:
        self._thread.start()
        if not self._ready.wait(timeout=30):
            raise RuntimeError("the gateway stack did not start in 30 s")
        if self._error is not None:
            raise self._error
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as err:  # reported to the test thread
            self._error = err
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with (
            running_vault(self._tmp_path, callers=VAULT_CALLERS) as vault,
            running_router(self._tmp_path, vault) as router,
        ):
            settings = replace(
                base_settings(self._tmp_path, vault), router_addr=router.address, **self._overrides
            )
            async with serve_asgi(create_app(settings)) as url:
                stub = auth_pb2_grpc.AuthServiceStub(vault.channel("gateway"))
                reply = await stub.CreateToken(
                    auth_pb2.CreateTokenRequest(user_id=self._user_id, name="contract"),
                    timeout=5,
                )
                self.url, self.token = url, reply.token
                self._ready.set()
                await self._stop.wait()
