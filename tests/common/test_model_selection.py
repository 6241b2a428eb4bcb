"""The one rule choosing a provider for a `model` string (SPEC 2.6), table-driven.

The vault's `Resolve` applies it to stored records; the gateway's model list and
`GET /v1/models/{id}` apply it to the protobuf providers the vault lists. Both must answer every
id the same way, which `test_the_vault_and_the_listed_providers_agree` pins.
"""

from __future__ import annotations

import pytest
from aicreds.vault.v1 import providers_pb2

from services.common.errors import AicredsError
from services.common.model_selection import model_owners, select_provider
from services.vault.providers import provider_for_model
from services.vault.store import ProviderRecord

# (name, models) in deliberately unsorted order: the tie rule must not depend on it.
PROVIDERS = [
    ("openai", ("gpt-4o", "shared-model", "o1")),
    ("anthropic", ("claude-sonnet-4", "shared-model", "meta-llama/Llama-3-70b")),
    ("azure", ("GPT-4o", "openai/gpt-4o-mini")),
    ("meta", ("bare-model",)),
]

# (model, provider or None, upstream model)
CASES = [
    # exact match of a listed model
    ("gpt-4o", "openai", "gpt-4o"),
    ("claude-sonnet-4", "anthropic", "claude-sonnet-4"),
    # case-sensitive: only azure lists `GPT-4o`
    ("GPT-4o", "azure", "GPT-4o"),
    ("Gpt-4o", None, ""),
    # several list it: the first by provider name (anthropic < openai), whatever the order
    ("shared-model", "anthropic", "shared-model"),
    # provider/model: that provider, whatever it lists; the prefix is dropped upstream
    ("openai/gpt-4o", "openai", "gpt-4o"),
    ("openai/not-listed", "openai", "not-listed"),
    ("anthropic/shared-model", "anthropic", "shared-model"),
    ("openai/org/model", "openai", "org/model"),  # only the first `/` separates
    # the prefix wins over a provider listing the whole string
    ("openai/gpt-4o-mini", "openai", "gpt-4o-mini"),
    # a prefix that is no provider: the whole string must be listed exactly
    ("meta-llama/Llama-3-70b", "anthropic", "meta-llama/Llama-3-70b"),
    ("nobody/gpt-4o", None, ""),
    # a provider prefix is case-sensitive too (provider names are lower-case)
    ("OpenAI/gpt-4o", None, ""),
    # an empty model after the prefix, or an empty prefix, is no prefix
    ("openai/", None, ""),
    ("/gpt-4o", None, ""),
    # no match
    ("gpt-5", None, ""),
    # not a model name at all: no provider can serve it
    ("", None, ""),
    (" gpt-4o", None, ""),
    ("gpt-4o ", None, ""),
    ("openai/gpt-4o\n", None, ""),
    ("openai/" + "m" * 300, None, ""),
]


class _Listed:
    """A provider as something other than the vault's record: a plain object."""

    def __init__(self, name: str, models: tuple[str, ...]) -> None:
        self.name = name
        self.models = models


def _records() -> list[ProviderRecord]:
    return [
        ProviderRecord("alice", name, "custom", "https://x.test", models, "warn", b"")
        for name, models in PROVIDERS
    ]


def _protos() -> list[providers_pb2.Provider]:
    return [providers_pb2.Provider(name=name, models=list(models)) for name, models in PROVIDERS]


@pytest.mark.parametrize(("model", "provider", "upstream"), CASES)
def test_select_provider(model: str, provider: str | None, upstream: str) -> None:
    choice = select_provider(model, [_Listed(name, models) for name, models in PROVIDERS])
    if provider is None:
        assert choice is None
        return
    assert choice is not None
    assert (choice.provider.name, choice.upstream_model) == (provider, upstream)
    assert choice.by_prefix == (upstream != model)


@pytest.mark.parametrize(("model", "provider", "upstream"), CASES)
def test_the_vault_and_the_listed_providers_agree(
    model: str, provider: str | None, upstream: str
) -> None:
    # The vault's Resolve selects over its records; the gateway over the protobuf providers the
    # vault lists. One rule: the same provider and upstream model, or not found for both.
    listed = select_provider(model, _protos())
    try:
        record, resolved_model = provider_for_model(_records(), model)
    except AicredsError as err:
        assert err.reason == "model_not_found"
        assert listed is None
        return
    assert listed is not None
    assert (record.name, resolved_model) == (listed.provider.name, listed.upstream_model)
    assert (record.name, resolved_model) == (provider, upstream)


def test_the_order_of_the_providers_does_not_matter() -> None:
    providers = [_Listed(name, models) for name, models in PROVIDERS]
    for model, _, _ in CASES:
        forward = select_provider(model, providers)
        backward = select_provider(model, list(reversed(providers)))
        assert (forward and forward.provider.name) == (backward and backward.provider.name)


def test_model_owners_list_each_model_once_with_the_provider_a_call_selects() -> None:
    owners = model_owners(_Listed(name, models) for name, models in PROVIDERS)
    assert [(model, provider.name) for model, provider in owners.items()] == [
        ("claude-sonnet-4", "anthropic"),
        ("shared-model", "anthropic"),
        ("meta-llama/Llama-3-70b", "anthropic"),
        ("GPT-4o", "azure"),
        # listed by azure, but a call naming it goes to the provider `openai` (prefix first)
        ("openai/gpt-4o-mini", "openai"),
        ("bare-model", "meta"),
        ("gpt-4o", "openai"),
        ("o1", "openai"),
    ]
    # The list says what a call does: every listed id selects the provider it is listed under.
    providers = [_Listed(name, models) for name, models in PROVIDERS]
    for model, owner in owners.items():
        choice = select_provider(model, providers)
        assert choice is not None and choice.provider.name == owner.name


def test_no_providers_serve_nothing() -> None:
    assert select_provider("gpt-4o", []) is None
    assert model_owners([]) == {}
