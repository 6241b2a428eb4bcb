"""Fixtures: a real vault and router (`stack_factory`), gateways served by uvicorn on
127.0.0.1:0 in front of them, each with a client.

`gateway_stack(**settings)` starts a gateway in front of the test's vault and router; several
gateways may share them (replicas). `stack.mint(user, ...)` issues an API token through the
vault's own `AuthService.CreateToken`, as the operator command does.

The router checks every saved provider's `base_url` (SPEC 2.3) with the default egress policy; a
test that needs another starts its own with `running_router(tmp_path, vault, egress_allow=...)`.
"""

from __future__ import annotations

import pytest

from tests.support.stack import (
    TEST_ORIGIN,
    Minted,
    ServiceStack,
    ServiceStackFactory,
    Stack,
    StackFactory,
)
from tests.support.vault import VaultHandle

# `test_sessions.py` and `test_tokens.py` import these from here.
__all__ = ["TEST_ORIGIN", "Minted", "Stack", "StackFactory"]


@pytest.fixture
async def services(stack_factory: ServiceStackFactory) -> ServiceStack:
    return await stack_factory()


@pytest.fixture
def vault(services: ServiceStack) -> VaultHandle:
    return services.vault


@pytest.fixture
def gateway_stack(services: ServiceStack) -> StackFactory:
    """Factory: `await gateway_stack(rate_burst=3, ...)` starts a gateway with those settings,
    in front of the test's vault and router unless `router_addr` says otherwise."""
    return services.gateway


@pytest.fixture
async def stack(gateway_stack: StackFactory) -> Stack:
    return await gateway_stack()
