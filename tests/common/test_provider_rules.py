"""Provider configuration rules (SPEC 2.3) and the provider enums' protobuf numbers."""

from __future__ import annotations

import re

import pytest
from aicreds.vault.v1 import providers_pb2 as pb

from services.common.errors import InvalidArgument
from services.common.provider_proto import (
    kind_name,
    kind_number,
    on_missing_name,
    on_missing_number,
)
from services.common.provider_rules import (
    DEFAULT_ON_MISSING_CREDENTIAL,
    ON_MISSING_CREDENTIAL,
    PROVIDER_KINDS,
    PROVIDER_NAME_JSON_PATTERN,
    base_url_problem,
    headers_problem,
    is_valid_model,
    kind_problem,
    models_problem,
    on_missing_problem,
    provider_name_problem,
    validate_headers,
    validate_kind,
    validate_on_missing,
    validate_provider_name,
)

SECRET = "sk-live-0123456789abcdef"


def test_kinds_and_modes_are_spec_2_3s() -> None:
    assert PROVIDER_KINDS == ("openai", "anthropic", "custom")
    assert ON_MISSING_CREDENTIAL == ("warn", "error")
    assert DEFAULT_ON_MISSING_CREDENTIAL == "warn"


@pytest.mark.parametrize("kind", ["", "OpenAI", "azure", "unspecified", " openai"])
def test_unknown_kinds_are_refused(kind: str) -> None:
    assert kind_problem(kind) == "kind must be openai, anthropic or custom"
    with pytest.raises(InvalidArgument):
        validate_kind(kind)


# Disagreement found: the gateway read `"on_missing_credential": ""` as the default `warn`
# (`optional_string(...) or "warn"`); only an absent (or null) field means the default.
@pytest.mark.parametrize("mode", ["", "WARN", "fail", "ignore"])
def test_unknown_on_missing_modes_are_refused(mode: str) -> None:
    assert on_missing_problem(mode) == "on_missing_credential must be warn or error"
    with pytest.raises(InvalidArgument):
        validate_on_missing(mode)


@pytest.mark.parametrize("name", ["openai", "a", "my_provider-2", "x" * 64])
def test_valid_provider_names(name: str) -> None:
    assert provider_name_problem(name) is None and validate_provider_name(name) == name
    assert re.fullmatch(PROVIDER_NAME_JSON_PATTERN, name)


@pytest.mark.parametrize("name", ["", "OpenAI", "x" * 65, "a/b", "a.b", "a b", "é"])
def test_invalid_provider_names(name: str) -> None:
    assert provider_name_problem(name) is not None
    assert not re.fullmatch(PROVIDER_NAME_JSON_PATTERN, name)


@pytest.mark.parametrize(
    ("base_url", "problem"),
    [
        ("https://api.openai.com/v1", None),
        ("http://127.0.0.1:8080", None),
        ("HTTPS://api.anthropic.com", None),  # the scheme is case-insensitive
        ("", "it is required"),
        ("ftp://x", "the scheme must be http or https"),
        ("https://", "it needs a host"),
        ("https://u:p@x.test", "it must not hold user:password@; put credentials in headers"),
        ("https://x.test/#a", "it must not have a #fragment"),
        ("https://x.test:99999", "it is not a URL"),
        (" https://x.test", "it must be printable ASCII without spaces"),
        ("https://x.test/" + "a" * 2048, "it is longer than 2048 characters"),
    ],
)
def test_base_urls(base_url: str, problem: str | None) -> None:
    expected = f"base_url is invalid: {problem}" if problem else None
    assert base_url_problem(base_url) == expected


def test_a_base_url_with_a_password_is_refused_without_echoing_it() -> None:
    problem = base_url_problem(f"https://user:{SECRET}@x.test")
    assert problem is not None and SECRET not in problem


@pytest.mark.parametrize(
    ("model", "valid"),
    [
        ("gpt-4o", True),
        ("meta-llama/Llama-3-70b", True),
        ("a b", True),
        ("m" * 256, True),
        ("", False),
        (" gpt", False),
        ("gpt ", False),
        ("gpt\n", False),
        ("m" * 257, False),
    ],
)
def test_models(model: str, valid: bool) -> None:
    assert is_valid_model(model) is valid


def test_a_model_listed_twice_is_refused() -> None:
    assert models_problem(["a", "b", "a"]) == "model 'a' is listed twice"
    assert models_problem(["m"] * 0) is None


def test_header_rules_never_echo_a_value() -> None:
    assert headers_problem({"Authorization": [f"Bearer {SECRET}"]}) is None
    bad_value = {"Authorization": [f"Bearer {SECRET}\n"]}
    problem = headers_problem(bad_value)
    assert problem is not None and "'Authorization'" in problem and SECRET not in problem
    assert headers_problem({"Host": ["x"]}) == "header 'Host' is set by the router, not configured"
    assert headers_problem({"X-A": ["1"], "x-a": ["2"]}) is not None
    assert headers_problem({"X-A": []}) == "header 'X-A' has no values"
    assert headers_problem({"bad name": ["1"]}) is not None
    assert validate_headers({"X-A": ("1", "2")}) == {"X-A": ["1", "2"]}


def test_proto_enum_numbers_round_trip() -> None:
    for kind in PROVIDER_KINDS:
        assert kind_name(kind_number(kind)) == kind
    for mode in ON_MISSING_CREDENTIAL:
        assert on_missing_name(on_missing_number(mode)) == mode


def test_unset_and_unknown_proto_enums() -> None:
    # proto3 leaves an unset enum at 0: no kind (refused by validation), the default mode.
    assert kind_name(pb.PROVIDER_KIND_UNSPECIFIED) is None
    assert on_missing_name(pb.ON_MISSING_CREDENTIAL_UNSPECIFIED) == "warn"
    assert kind_name(99) is None  # type: ignore[arg-type]
    assert on_missing_name(99) is None  # type: ignore[arg-type]
