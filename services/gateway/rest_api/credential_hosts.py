"""Credential host binding (SPEC 2.9): the upstream hosts each credential may be sent to.

    GET /api/v2/users/me/ai-credential-hosts             every bound key -> its hosts
    GET /api/v2/users/me/ai-credentials/{key}/hosts      one key's hosts ([] = any host)
    PUT /api/v2/users/me/ai-credentials/{key}/hosts      bind it ({"hosts": [...]}; [] unbinds)

The seed's credential shapes (SPEC 2.2) are untouched: the binding has its own endpoints. The
pattern rule is `services.common.host_patterns`' (checked here first, and again by the vault).
"""

from __future__ import annotations

from services.common.errors import InvalidArgument
from services.common.host_patterns import MAX_PATTERN_LENGTH, MAX_PATTERNS, canonical_patterns
from services.common.scopes import Scope
from services.gateway.clients import VaultClient
from services.gateway.endpoint_table import ApiCall, Endpoint, Reply
from services.gateway.errors import invalid_argument
from services.gateway.schemas import CREDENTIAL_KEY, envelope, obj
from services.gateway.validation import check_credential_key, require_object

ALL_HOSTS = "/api/v2/users/me/ai-credential-hosts"
KEY_HOSTS = "/api/v2/users/me/ai-credentials/{key}/hosts"

_HOST_LIST = {
    "type": "array",
    "maxItems": MAX_PATTERNS,
    "items": {"type": "string", "minLength": 1, "maxLength": MAX_PATTERN_LENGTH},
    "description": "host patterns: `api.openai.com`, `*.openai.azure.com` (any subdomain, not "
    "the bare suffix), `127.0.0.1:8080`, `[::1]:8443`; without a port, the default port of "
    "the call's scheme. Empty: any host.",
}
_KEY_REPLY = envelope(obj({"key": CREDENTIAL_KEY, "hosts": _HOST_LIST}, ["key", "hosts"]))
_ALL_REPLY = envelope(
    obj(
        {
            "hosts": {
                "type": "object",
                "additionalProperties": _HOST_LIST,
                "description": "credential key -> its hosts; unbound keys are absent",
            }
        },
        ["hosts"],
    )
)
_KEY_PARAM = {"key": CREDENTIAL_KEY}
_NOT_FOUND = {404: "credential_not_found"}


def parse_hosts(body: object) -> list[str]:
    """`{"hosts": [...]}` -> the canonical patterns; 400 naming a bad one."""
    fields = require_object(body)
    if set(fields) != {"hosts"}:
        raise invalid_argument('the body must be {"hosts": [pattern, ...]}')
    hosts = fields["hosts"]
    if not isinstance(hosts, list) or not all(isinstance(item, str) for item in hosts):
        raise invalid_argument("'hosts' must be a list of strings")
    try:
        return list(canonical_patterns(hosts))
    except InvalidArgument as err:
        raise invalid_argument(err.message) from None


def endpoints(vault: VaultClient) -> list[Endpoint]:
    """The binding operations, answering from `vault`."""

    async def get_all(call: ApiCall) -> Reply:
        return Reply({"hosts": await vault.get_credential_hosts(call.user_id)})

    async def get_one(call: ApiCall) -> Reply:
        key = check_credential_key(call.path_param("key"))
        hosts = await vault.get_credential_hosts(call.user_id, key)
        return Reply({"key": key, "hosts": hosts.get(key, [])})

    async def put_one(call: ApiCall) -> Reply:
        key = check_credential_key(call.path_param("key"))
        hosts = parse_hosts(await call.json())
        stored = await vault.set_credential_hosts(call.user_id, key, hosts)
        return Reply({"key": key, "hosts": stored})

    return [
        Endpoint(
            "GET",
            ALL_HOSTS,
            get_all,
            "Get the host binding of every bound credential",
            "credentials",
            _ALL_REPLY,
            scope=Scope.CREDENTIALS_READ,
        ),
        Endpoint(
            "GET",
            KEY_HOSTS,
            get_one,
            "Get one credential's host binding",
            "credentials",
            _KEY_REPLY,
            scope=Scope.CREDENTIALS_READ,
            path_params=_KEY_PARAM,
            errors=_NOT_FOUND,
        ),
        Endpoint(
            "PUT",
            KEY_HOSTS,
            put_one,
            "Bind a credential to hosts (an empty list: any host)",
            "credentials",
            _KEY_REPLY,
            scope=Scope.CREDENTIALS_WRITE,
            path_params=_KEY_PARAM,
            request_schema=obj({"hosts": _HOST_LIST}, ["hosts"]),
            errors=_NOT_FOUND,
        ),
    ]
