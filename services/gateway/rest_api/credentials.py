"""`/api/v2/users/me/ai-credentials` (SPEC 2.2): the user's credential map.

`endpoints(vault)` is the endpoint table. `?masked=true` shows each value masked by
`services.common.header_masking.mask_credential_value`, the home of both masking rules (provider
headers are masked by the vault).
"""

from __future__ import annotations

from collections.abc import Mapping

from services.common.header_masking import mask_credential_value
from services.common.scopes import Scope
from services.gateway.clients import VaultClient
from services.gateway.endpoint_table import ApiCall, Endpoint, QueryParam, Reply
from services.gateway.schemas import CREDENTIAL_KEY, envelope, obj, ref
from services.gateway.validation import (
    check_credential_key,
    parse_credential_map,
    parse_credential_value,
)

BASE = "/api/v2/users/me/ai-credentials"

_MASKED = QueryParam(
    "masked",
    {"type": "boolean", "default": False},
    "show each value masked: first 3 and last 4 characters of a value of at least 16, "
    "otherwise MASKED",
)
_MAP_REPLY = envelope(obj({"credentials": ref("CredentialMap")}, ["credentials"]))
_PAIR_REPLY = envelope(obj({"key": CREDENTIAL_KEY, "value": {"type": "string"}}, ["key", "value"]))
_KEY_PARAM = {"key": CREDENTIAL_KEY}
_NOT_FOUND = {404: "credential_not_found"}


def _shown(credentials: Mapping[str, str], masked: bool) -> dict[str, str]:
    if not masked:
        return dict(sorted(credentials.items()))
    return {key: mask_credential_value(value) for key, value in sorted(credentials.items())}


def endpoints(vault: VaultClient) -> list[Endpoint]:
    """The credential operations, answering from `vault`."""

    async def get_all(call: ApiCall) -> Reply:
        masked = call.flag("masked")
        credentials = await vault.get_credentials(call.user_id)
        return Reply({"credentials": _shown(credentials, masked)})

    async def replace_all(call: ApiCall) -> Reply:
        credentials = parse_credential_map(await call.json())
        stored = await vault.replace_credentials(call.user_id, credentials)
        return Reply({"credentials": _shown(stored, False)})

    async def delete_all(call: ApiCall) -> Reply:
        await vault.delete_credentials(call.user_id)
        return Reply({"credentials": {}})

    async def get_one(call: ApiCall) -> Reply:
        key = check_credential_key(call.path_param("key"))
        masked = call.flag("masked")
        value = await vault.get_credential(call.user_id, key)
        return Reply({"key": key, "value": mask_credential_value(value) if masked else value})

    async def put_one(call: ApiCall) -> Reply:
        key = check_credential_key(call.path_param("key"))
        value = parse_credential_value(key, await call.json())
        stored = await vault.put_credential(call.user_id, key, value)
        return Reply({"key": key, "value": stored})

    async def delete_one(call: ApiCall) -> Reply:
        key = check_credential_key(call.path_param("key"))
        await vault.delete_credential(call.user_id, key)
        return Reply({"key": key})

    return [
        Endpoint(
            "GET",
            BASE,
            get_all,
            "Get the whole credential map",
            "credentials",
            _MAP_REPLY,
            scope=Scope.CREDENTIALS_READ,
            query=[_MASKED],
        ),
        Endpoint(
            "PUT",
            BASE,
            replace_all,
            "Replace the whole credential map",
            "credentials",
            _MAP_REPLY,
            scope=Scope.CREDENTIALS_WRITE,
            request_schema=obj({"credentials": ref("CredentialMapInput")}, ["credentials"]),
        ),
        Endpoint(
            "DELETE",
            BASE,
            delete_all,
            "Delete the whole credential map",
            "credentials",
            _MAP_REPLY,
            scope=Scope.CREDENTIALS_WRITE,
        ),
        Endpoint(
            "GET",
            BASE + "/{key}",
            get_one,
            "Get one credential",
            "credentials",
            _PAIR_REPLY,
            scope=Scope.CREDENTIALS_READ,
            query=[_MASKED],
            path_params=_KEY_PARAM,
            errors=_NOT_FOUND,
        ),
        Endpoint(
            "PUT",
            BASE + "/{key}",
            put_one,
            "Create or update one credential",
            "credentials",
            _PAIR_REPLY,
            scope=Scope.CREDENTIALS_WRITE,
            path_params=_KEY_PARAM,
            request_schema=obj(
                {"value": {"$ref": "#/components/schemas/CredentialValue"}}, ["value"]
            ),
        ),
        Endpoint(
            "DELETE",
            BASE + "/{key}",
            delete_one,
            "Delete one credential",
            "credentials",
            envelope(obj({"key": CREDENTIAL_KEY}, ["key"])),
            scope=Scope.CREDENTIALS_WRITE,
            path_params=_KEY_PARAM,
            errors=_NOT_FOUND,
        ),
    ]
