"""`/api/v2/users/me/ai-providers` (SPEC 2.3): the user's AI provider configurations.

The vault masks sensitive header values in every reply and reports literal secrets as
`warnings`; this module converts between the REST JSON and the protobuf messages.

Before a create or an update is written, the router checks `base_url` against its egress policy
(SPEC 3.4) with its own resolver and allowlist: a refused host is 400 `egress_denied`, and a
router that cannot be asked is 503; in both cases nothing is written. (400 like the other
refusals of a `base_url`: the request is well-formed, but this value cannot be saved; 403 would
read as the client's token lacking a right.) The router checks again on every call, on the
address it actually connects to, which is what defeats DNS rebinding; this check answers early.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aicreds.vault.v1 import providers_pb2

from services.common.credential_rules import describe
from services.common.provider_proto import (
    kind_name,
    kind_number,
    on_missing_name,
    on_missing_number,
)
from services.common.provider_rules import (
    DEFAULT_ON_MISSING_CREDENTIAL,
    MAX_BASE_URL,
    ProviderKind,
    base_url_problem,
    kind_problem,
    on_missing_problem,
)
from services.common.scopes import Scope
from services.gateway.clients import RouterClient, VaultClient
from services.gateway.endpoint_table import ApiCall, Endpoint, Reply
from services.gateway.errors import ApiError, invalid_argument
from services.gateway.schemas import PROVIDER_NAME, envelope, obj, ref
from services.gateway.validation import optional_string, require_object, string_list

BASE = "/api/v2/users/me/ai-providers"


def provider_json(provider: providers_pb2.Provider) -> dict[str, Any]:
    """A (masked) provider as REST JSON (`services.common.provider_proto` names the enums; the
    vault validates what it stores, so an unknown number is only a stored record from a newer
    version, shown as `custom`/`warn`)."""
    return {
        "name": provider.name,
        "kind": kind_name(provider.kind) or ProviderKind.CUSTOM.value,
        "base_url": provider.base_url,
        "headers": {name: list(values.values) for name, values in sorted(provider.headers.items())},
        "models": list(provider.models),
        "on_missing_credential": on_missing_name(provider.on_missing_credential)
        or DEFAULT_ON_MISSING_CREDENTIAL,
    }


def parse_provider(body: object, *, name: str | None = None) -> providers_pb2.Provider:
    """A provider from REST JSON; `name` (from the path) must match the body's if both exist."""
    data = require_object(body)
    unknown = sorted(
        set(data) - {"name", "kind", "base_url", "headers", "models", "on_missing_credential"}
    )
    if unknown:
        raise invalid_argument(f"unknown field {describe(unknown[0])}")
    body_name = optional_string(data, "name", max_len=64)
    if name is not None and body_name is not None and body_name != name:
        raise invalid_argument("'name' in the body differs from the name in the path")
    final_name = name if name is not None else body_name
    if not final_name:
        raise invalid_argument("missing field 'name'")
    kind = optional_string(data, "kind")
    if kind is None:
        raise invalid_argument("missing field 'kind'")
    _refuse(kind_problem(kind))
    base_url = optional_string(data, "base_url", max_len=MAX_BASE_URL)
    if base_url is None:
        raise invalid_argument("missing field 'base_url'")
    _refuse(base_url_problem(base_url))
    # The default only for a missing or null field: "" is not a mode (SPEC 2.3: warn or error).
    on_missing = optional_string(data, "on_missing_credential")
    if on_missing is None:
        on_missing = DEFAULT_ON_MISSING_CREDENTIAL
    _refuse(on_missing_problem(on_missing))
    return providers_pb2.Provider(
        name=final_name,
        kind=kind_number(kind),
        base_url=base_url,
        headers={
            header: providers_pb2.HeaderValues(values=values)
            for header, values in _headers(data).items()
        },
        models=string_list(data, "models"),
        on_missing_credential=on_missing_number(on_missing),
    )


def _refuse(problem: str | None) -> None:
    """400 `invalid_argument` with a rule's message, when there is one."""
    if problem:
        raise invalid_argument(problem)


def _headers(data: Mapping[str, Any]) -> dict[str, list[str]]:
    raw = data.get("headers")
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise invalid_argument("'headers' must be an object of header name -> list of values")
    headers: dict[str, list[str]] = {}
    for header, values in raw.items():
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise invalid_argument(f"header {describe(str(header))} must map to a list of strings")
        headers[header] = values
    return headers


def _reply(
    reply: providers_pb2.ProviderResponse, status: int = 200, warnings: Sequence[str] = ()
) -> Reply:
    return Reply(
        {"provider": provider_json(reply.provider), "warnings": [*reply.warnings, *warnings]},
        status=status,
    )


_NAME = {"name": PROVIDER_NAME}
_ONE = envelope(ref("ProviderReply"))
_NOT_FOUND = {404: "provider_not_found"}
# What saving a provider adds: the router's egress check of base_url.
_SAVE_ERRORS = {
    400: "invalid_argument: a bad field; or egress_denied: the router's egress policy refuses "
    "base_url's host (the message names the host and why)",
    503: "unavailable: the vault, or the router that checks base_url, is unreachable",
}


def endpoints(vault: VaultClient, router: RouterClient) -> list[Endpoint]:
    """The provider operations: stored by `vault`, `base_url` checked by `router`."""

    async def check_egress(base_url: str) -> list[str]:
        """Ask the router whether `base_url` may be called; the warnings to add to the reply.

        Raises:
            ApiError: 400 `egress_denied` naming the host and why; the router's failure, mapped
                (503 when it is unreachable).
        """
        check = await router.check_upstream(base_url)
        if not check.allowed:
            raise ApiError(400, "egress_denied", f"base_url: {check.reason}")
        if not check.resolved:
            return ["base_url's host does not resolve now; calls fail until it does"]
        return []

    async def list_providers(call: ApiCall) -> Reply:
        providers = await vault.list_providers(call.user_id)
        return Reply({"providers": [provider_json(p) for p in providers]})

    async def create_provider(call: ApiCall) -> Reply:
        provider = parse_provider(await call.json())
        warnings = await check_egress(provider.base_url)
        return _reply(await vault.create_provider(call.user_id, provider), 201, warnings)

    async def get_provider(call: ApiCall) -> Reply:
        return _reply(await vault.get_provider(call.user_id, call.path_param("name")))

    async def update_provider(call: ApiCall) -> Reply:
        provider = parse_provider(await call.json(), name=call.path_param("name"))
        warnings = await check_egress(provider.base_url)
        return _reply(await vault.update_provider(call.user_id, provider), 200, warnings)

    async def delete_provider(call: ApiCall) -> Reply:
        name = call.path_param("name")
        await vault.delete_provider(call.user_id, name)
        return Reply({"name": name})

    return [
        Endpoint(
            "GET",
            BASE,
            list_providers,
            "List providers",
            "providers",
            envelope(
                obj({"providers": {"type": "array", "items": ref("Provider")}}, ["providers"])
            ),
            scope=Scope.PROVIDERS_READ,
        ),
        Endpoint(
            "POST",
            BASE,
            create_provider,
            "Create a provider",
            "providers",
            _ONE,
            scope=Scope.PROVIDERS_WRITE,
            success_status=201,
            request_schema=ref("ProviderCreate"),
            errors={**_SAVE_ERRORS, 409: "provider_exists"},
        ),
        Endpoint(
            "GET",
            BASE + "/{name}",
            get_provider,
            "Get a provider",
            "providers",
            _ONE,
            scope=Scope.PROVIDERS_READ,
            path_params=_NAME,
            errors=_NOT_FOUND,
        ),
        Endpoint(
            "PUT",
            BASE + "/{name}",
            update_provider,
            "Replace a provider",
            "providers",
            _ONE,
            scope=Scope.PROVIDERS_WRITE,
            path_params=_NAME,
            request_schema=ref("ProviderUpdate"),
            errors={**_SAVE_ERRORS, **_NOT_FOUND},
        ),
        Endpoint(
            "DELETE",
            BASE + "/{name}",
            delete_provider,
            "Delete a provider",
            "providers",
            envelope(obj({"name": PROVIDER_NAME}, ["name"])),
            scope=Scope.PROVIDERS_WRITE,
            path_params=_NAME,
            errors=_NOT_FOUND,
        ),
    ]
