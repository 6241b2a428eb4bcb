"""The provider enums of `aicreds.vault.v1` and their names (`services.common.provider_rules`).

One table each way for the vault's ProviderService and the gateway's REST conversion. No grpc:
only the generated protobuf messages.

- `PROVIDER_KIND_UNSPECIFIED` and unknown numbers have no name: `kind_name` answers None, and a
  request carrying one is refused by validation.
- `ON_MISSING_CREDENTIAL_UNSPECIFIED` is `warn`, the default (SPEC 3.2), as proto3 leaves an unset
  enum at 0; unknown numbers answer None.
"""

from __future__ import annotations

from collections.abc import Mapping

from aicreds.vault.v1 import providers_pb2 as pb

from services.common.provider_rules import OnMissingCredential, ProviderKind

KIND_BY_NAME: Mapping[str, pb.ProviderKind] = {
    ProviderKind.OPENAI.value: pb.PROVIDER_KIND_OPENAI,
    ProviderKind.ANTHROPIC.value: pb.PROVIDER_KIND_ANTHROPIC,
    ProviderKind.CUSTOM.value: pb.PROVIDER_KIND_CUSTOM,
}
NAME_BY_KIND: Mapping[pb.ProviderKind, str] = {
    number: name for name, number in KIND_BY_NAME.items()
}

ON_MISSING_BY_NAME: Mapping[str, pb.OnMissingCredential] = {
    OnMissingCredential.WARN.value: pb.ON_MISSING_CREDENTIAL_WARN,
    OnMissingCredential.ERROR.value: pb.ON_MISSING_CREDENTIAL_ERROR,
}
NAME_BY_ON_MISSING: Mapping[pb.OnMissingCredential, str] = {
    pb.ON_MISSING_CREDENTIAL_UNSPECIFIED: OnMissingCredential.WARN.value,
    **{number: name for name, number in ON_MISSING_BY_NAME.items()},
}


def kind_name(number: pb.ProviderKind) -> str | None:
    """`openai`, `anthropic` or `custom`; None for UNSPECIFIED or an unknown number."""
    return NAME_BY_KIND.get(number)


def kind_number(name: str) -> pb.ProviderKind:
    """The enum number of a valid kind name (KeyError otherwise: validate first)."""
    return KIND_BY_NAME[name]


def on_missing_name(number: pb.OnMissingCredential) -> str | None:
    """`warn` (also for UNSPECIFIED) or `error`; None for an unknown number."""
    return NAME_BY_ON_MISSING.get(number)


def on_missing_number(name: str) -> pb.OnMissingCredential:
    """The enum number of a valid mode name (KeyError otherwise: validate first)."""
    return ON_MISSING_BY_NAME[name]
