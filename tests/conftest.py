"""Factory fixtures for every area: the stack (`tests/support/stack.py`) and the fake upstream
(`tests/support/fake_upstream.py`), each started in the test's event loop and stopped after it.

    services = await stack_factory(egress_allow="127.0.0.1")     # vault + router
    stack = await services.gateway(rate_burst=3)                  # + a gateway, with a client
    upstream = await upstream_factory(handler, tls=context)       # echo_handler by default
"""

from __future__ import annotations

# First: the services' gRPC options must be set before grpc is imported
# (`services.common.grpc_runtime`), so that the services the tests start run as deployed.
import services  # noqa: F401  # isort: skip

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.support.fake_upstream import FakeUpstream, UpstreamFactory, running_upstream
from tests.support.stack import ServiceStack, ServiceStackFactory, running_stack


@pytest.fixture
async def stack_factory(tmp_path: Path) -> AsyncIterator[ServiceStackFactory]:
    """`await stack_factory(**options)`: `running_stack`'s options; the first stack's state is
    in `tmp_path`, any further one's in a directory of its own."""
    async with AsyncExitStack() as exits:
        started = 0

        async def make(**options: Any) -> ServiceStack:
            nonlocal started
            directory = tmp_path if started == 0 else tmp_path / f"stack-{started}"
            started += 1
            return await exits.enter_async_context(running_stack(directory, **options))

        yield make


@pytest.fixture
async def upstream_factory() -> AsyncIterator[UpstreamFactory]:
    """`await upstream_factory(handler=echo_handler, tls=None)`: a started `FakeUpstream`."""
    async with AsyncExitStack() as exits:

        async def make(*args: Any, **kwargs: Any) -> FakeUpstream:
            return await exits.enter_async_context(running_upstream(*args, **kwargs))

        yield make
