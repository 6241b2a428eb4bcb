"""Which caller right each vault RPC needs (SPEC 4.2). Methods not listed are refused.

To add a service: add its methods here with the right they need, and register its servicer in
`server.register_services`.
"""

from __future__ import annotations

from collections.abc import Mapping

from services.common.callers import Right

CREDENTIAL_SERVICE = "aicreds.vault.v1.CredentialService"
PROVIDER_SERVICE = "aicreds.vault.v1.ProviderService"
AUTH_SERVICE = "aicreds.vault.v1.AuthService"
AUDIT_SERVICE = "aicreds.vault.v1.AuditService"
USAGE_SERVICE = "aicreds.vault.v1.UsageService"


def _methods(service: str, right: Right, *names: str) -> dict[str, Right]:
    return {f"/{service}/{name}": right for name in names}


REQUIRED_RIGHTS: Mapping[str, Right] = {
    **_methods(
        CREDENTIAL_SERVICE,
        Right.MANAGE,
        "GetCredentials",
        "ReplaceCredentials",
        "GetCredential",
        "PutCredential",
        "DeleteCredential",
        "DeleteCredentials",
        "GetCredentialHosts",
        "SetCredentialHosts",
    ),
    **_methods(CREDENTIAL_SERVICE, Right.RESOLVE, "Resolve", "ResolveStream"),
    **_methods(
        PROVIDER_SERVICE,
        Right.MANAGE,
        "CreateProvider",
        "GetProvider",
        "ListProviders",
        "UpdateProvider",
        "DeleteProvider",
    ),
    **_methods(
        AUTH_SERVICE,
        Right.MANAGE,
        "CreateToken",
        "ListTokens",
        "RevokeToken",
        "CreateSession",
        "RevokeSession",
        "Authenticate",
    ),
    # One right per method: `manage` (the gateway reads a user's own log). The operator reads
    # any log with `aicreds-admin audit`, which opens the database, so `admin` is not needed.
    **_methods(AUDIT_SERVICE, Right.MANAGE, "ListAuditEvents"),
    # The router reports usage after each answer, as it resolves before it; the gateway reads
    # a user's own totals.
    **_methods(USAGE_SERVICE, Right.RESOLVE, "RecordUsage"),
    **_methods(USAGE_SERVICE, Right.MANAGE, "GetUsage"),
}
