"""The gRPC service config of every internal channel: round robin, and retries where safe.

Round robin spreads calls over every address the target resolves to (a Kubernetes headless
Service returns one per ready pod), instead of sending them all down the one connection
`pick_first` would keep. A retry is one more attempt on UNAVAILABLE (the replica went away, or
said it cannot serve now), at most three attempts in all, within the call's own deadline; round
robin sends it to the next replica.

`RETRIED` is the one table of which RPCs may be retried: every RPC of the protos is decided in
it (a test checks that none is missing), by whether a second delivery of the same request can
change what happened or what the caller is told:

- reads, and `Resolve`/`Authenticate`/`Preview`/`CheckUpstream`: yes. `Resolve` (and `Preview`,
  which resolves) writes an audit row per attempt: a retried call may leave one row more, which
  is an honest record of what the vault was asked.
- writes that set a state regardless of the one before (`PutCredential` is an upsert,
  `ReplaceCredentials`, `SetCredentialHosts`, `UpdateProvider`, `DeleteCredentials`, and the
  revocations, which succeed twice): yes. Only a count or flag in the answer can differ: a
  retried `DeleteCredentials` may report 0 deleted and a retried `RevokeSession` `revoked =
  false` when the first attempt had done it (the gateway ignores the count; the logout's
  `revoked` may then say false for a session that is ended all the same).
- writes whose second delivery fails or makes a second thing: no. `CreateProvider` would answer
  ALREADY_EXISTS for the provider it just created, `DeleteCredential`/`DeleteProvider` NOT_FOUND
  for what they just deleted; `CreateToken` and `CreateSession` would mint a second secret.
- anything that sends a request upstream: no. `Invoke`/`InvokeBuffered` are model calls that may
  have reached the upstream (and cost money) before the router failed; `CheckProvider` sends
  one request too, and the user can simply test again.

gRPC still makes its transparent retries (a call that never reached the server application,
e.g. a connection refused before the request was sent) whatever this table says: those are safe
for every RPC.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aicreds.router.v1 import router_pb2
from aicreds.vault.v1 import audit_pb2, auth_pb2, credentials_pb2, providers_pb2, usage_pb2
from google.protobuf.descriptor import FileDescriptor

#: Every RPC of the protos, by service full name and method name: whether it may be retried.
RETRIED: Mapping[str, Mapping[str, bool]] = {
    "aicreds.vault.v1.CredentialService": {
        "GetCredentials": True,
        "GetCredential": True,
        "GetCredentialHosts": True,
        "Resolve": True,
        # A stream is never retried by gRPC: the router asks again, on a new stream, for the
        # requests of one that broke (`services.router.resolve_stream`).
        "ResolveStream": False,
        "PutCredential": True,
        "ReplaceCredentials": True,
        "SetCredentialHosts": True,
        "DeleteCredentials": True,
        "DeleteCredential": False,
    },
    "aicreds.vault.v1.ProviderService": {
        "GetProvider": True,
        "ListProviders": True,
        "UpdateProvider": True,
        "CreateProvider": False,
        "DeleteProvider": False,
    },
    "aicreds.vault.v1.AuthService": {
        "Authenticate": True,
        "ListTokens": True,
        "RevokeToken": True,
        "RevokeSession": True,
        "CreateToken": False,
        "CreateSession": False,
    },
    "aicreds.vault.v1.AuditService": {
        "ListAuditEvents": True,
    },
    "aicreds.vault.v1.UsageService": {
        "GetUsage": True,
        # Adds to the counts: a retry after a lost answer would count a call twice.
        "RecordUsage": False,
    },
    "aicreds.router.v1.RouterService": {
        "Preview": True,
        "CheckUpstream": True,
        "Invoke": False,
        "InvokeBuffered": False,
        # Never retried by gRPC: the gateway sends again, as unary calls, only the calls of
        # a stream that ended OK without reading them (`services.gateway.router_streams`).
        "InvokeBufferedStream": False,
        "CheckProvider": False,
    },
}

#: The protos `RETRIED` decides, for the completeness check.
PROTO_FILES: tuple[FileDescriptor, ...] = (
    credentials_pb2.DESCRIPTOR,
    providers_pb2.DESCRIPTOR,
    auth_pb2.DESCRIPTOR,
    audit_pb2.DESCRIPTOR,
    usage_pb2.DESCRIPTOR,
    router_pb2.DESCRIPTOR,
)

#: Three attempts, the second after up to 50 ms and the third after up to 100 ms more (gRPC
#: draws each backoff at random below the bound): a replica that went away costs a caller
#: milliseconds, not a failure.
RETRY_POLICY: Mapping[str, Any] = {
    "maxAttempts": 3,
    "initialBackoff": "0.05s",
    "maxBackoff": "0.5s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}

#: Retries pause while more attempts fail than succeed (a token bucket of 10: a failed attempt
#: takes 1, a success gives 1 back, no retry below 5): one bad replica among healthy ones is
#: retried around, but when every replica is down a retry only multiplies the load on whatever
#: comes back first. The ratio is written `1.0`: gRPC (1.85) reads a JSON `1` as no ratio at
#: all, and retries then stop after five failures whatever the successes.
RETRY_THROTTLING: Mapping[str, float] = {"maxTokens": 10, "tokenRatio": 1.0}


def proto_methods() -> dict[str, list[str]]:
    """Every RPC of `PROTO_FILES`: service full name -> method names."""
    return {
        service.full_name: [method.name for method in service.methods]
        for file in PROTO_FILES
        for service in file.services_by_name.values()
    }


def service_config() -> dict[str, Any]:
    """The service config: round robin, and `RETRY_POLICY` on the RPCs `RETRIED` allows."""
    retried = [
        {"service": service, "method": method}
        for service, methods in RETRIED.items()
        for method, retry in methods.items()
        if retry
    ]
    return {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [{"name": retried, "retryPolicy": dict(RETRY_POLICY)}],
        "retryThrottling": dict(RETRY_THROTTLING),
    }


#: The `grpc.service_config` channel argument (gRPC takes it as JSON text).
SERVICE_CONFIG_JSON = json.dumps(service_config(), sort_keys=True)
