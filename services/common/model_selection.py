"""Which of a user's providers serves a `model` string (SPEC 2.6). Pure: no I/O, no grpc.

The one rule behind the vault's `Resolve` (which picks the provider a call goes to) and the
gateway's model list and `GET /v1/models/{id}` (which must answer what a call would do):

1. `provider_name/model`, where `provider_name` is one of the user's providers and `model` is not
   empty, picks that provider whatever it lists, and `model` (everything after the first `/`)
   goes upstream. `openai/org/model` sends `org/model`.
2. Otherwise the provider whose `models` lists the whole string exactly (case-sensitive) serves
   it, and the string goes upstream unchanged. When several list it, the first by provider name
   wins, whatever order the providers are given in; the others are still reachable by prefix.
3. Otherwise no provider serves it (404 `model_not_found`), as for any string that is not a
   valid model name (`provider_rules.is_valid_model`): no provider can list one.

Providers are anything with a `name` and a collection of `models` (the vault's stored records,
the protobuf `Provider` the gateway lists).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from services.common.provider_rules import is_valid_model


class ServesModels(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def models(self) -> Collection[str]: ...


P = TypeVar("P", bound=ServesModels)


@dataclass(frozen=True)
class ModelChoice(Generic[P]):
    """The provider a `model` string selects, and the model name to send upstream."""

    provider: P
    upstream_model: str
    by_prefix: bool


def select_provider(model: str, providers: Iterable[P]) -> ModelChoice[P] | None:
    """The provider serving `model` and the upstream model name; None when none does."""
    if not is_valid_model(model):
        return None
    candidates = list(providers)
    prefix, slash, rest = model.partition("/")
    if slash and rest:
        for provider in candidates:
            if provider.name == prefix:
                return ModelChoice(provider, rest, by_prefix=True)
    listing = [provider for provider in candidates if model in provider.models]
    if not listing:
        return None
    return ModelChoice(min(listing, key=_name), model, by_prefix=False)


def model_owners(providers: Iterable[P]) -> dict[str, P]:
    """Every model the providers list, each once, mapped to the provider a call naming it
    selects; in order of provider name, then of each provider's list.

    That is the first provider by name listing it (rule 2), except for a listed name that reads
    as `provider_name/model` of an existing provider: a call naming it goes to that provider
    (rule 1), so it is listed as that provider's.
    """
    ordered = sorted(providers, key=_name)
    owners: dict[str, P] = {}
    for provider in ordered:
        for model in provider.models:
            if model not in owners:
                choice = select_provider(model, ordered)
                owners[model] = choice.provider if choice is not None else provider
    return owners


def _name(provider: ServesModels) -> str:
    return provider.name
