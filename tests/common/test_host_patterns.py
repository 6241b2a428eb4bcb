"""The credential host binding pattern rule (SPEC 2.9): parsing, canonical form, matching."""

from __future__ import annotations

import pytest

from services.common.errors import InvalidArgument
from services.common.host_patterns import (
    MAX_PATTERNS,
    canonical_patterns,
    host_allowed,
    parse_pattern,
    patterns_from_json,
    patterns_json,
)


def test_an_empty_list_allows_any_host() -> None:
    assert host_allowed([], "evil.example", 443)
    assert host_allowed((), "127.0.0.1", 8080, 80)


def test_an_exact_host_matches_itself_on_the_default_port_only() -> None:
    patterns = ["api.openai.com"]
    assert host_allowed(patterns, "api.openai.com", 443)
    assert host_allowed(patterns, "API.OpenAI.com", 443)
    assert host_allowed(patterns, "api.openai.com", 80, default_port=80)
    assert not host_allowed(patterns, "api.openai.com", 8443)
    assert not host_allowed(patterns, "api.openai.com.evil.example", 443)
    assert not host_allowed(patterns, "evilapi.openai.com", 443)
    assert not host_allowed(patterns, "x.api.openai.com", 443)


def test_a_wildcard_matches_subdomains_at_any_depth_but_not_the_bare_suffix() -> None:
    patterns = ["*.openai.azure.com"]
    assert host_allowed(patterns, "mine.openai.azure.com", 443)
    assert host_allowed(patterns, "a.b.c.openai.azure.com", 443)
    assert not host_allowed(patterns, "openai.azure.com", 443)
    assert not host_allowed(patterns, "evilopenai.azure.com", 443)
    assert not host_allowed(patterns, "openai.azure.com.evil.example", 443)


def test_an_explicit_port_is_the_only_port() -> None:
    patterns = canonical_patterns(["127.0.0.1:8080", "*.corp.example:8443"])
    assert host_allowed(patterns, "127.0.0.1", 8080, 80)
    assert not host_allowed(patterns, "127.0.0.1", 80, 80)
    assert not host_allowed(patterns, "127.0.0.1", 8081, 80)
    assert host_allowed(patterns, "llm.corp.example", 8443)
    assert not host_allowed(patterns, "llm.corp.example", 443)


def test_names_are_idna_encoded_and_lower_cased() -> None:
    assert canonical_patterns(["API.OpenAI.COM", "Bücher.Example", "*.Bücher.Example:444"]) == (
        "*.xn--bcher-kva.example:444",
        "api.openai.com",
        "xn--bcher-kva.example",
    )
    patterns = canonical_patterns(["bücher.example"])
    assert host_allowed(patterns, "xn--bcher-kva.example", 443)
    assert host_allowed(patterns, "BÜCHER.example", 443)


def test_ip_literals_are_exact_hosts() -> None:
    assert canonical_patterns(["[::1]:8443", "[0:0::1]", "10.0.0.1"]) == (
        "10.0.0.1",
        "[::1]",
        "[::1]:8443",
    )
    assert host_allowed(["[::1]:8443"], "::1", 8443)
    assert host_allowed(["[::1]:8443"], "[::1]", 8443)
    assert not host_allowed(["[::1]:8443"], "::2", 8443)
    assert host_allowed(["10.0.0.1"], "10.0.0.1", 443)
    assert not host_allowed(["10.0.0.1"], "10.0.0.10", 443)


def test_canonical_patterns_are_sorted_and_de_duplicated() -> None:
    assert canonical_patterns(["b.example", "A.example", "a.example"]) == ("a.example", "b.example")
    assert canonical_patterns([]) == ()


@pytest.mark.parametrize(
    "pattern",
    [
        "",
        "https://api.openai.com",
        "api.openai.com/v1",
        "user@api.openai.com",
        " api.openai.com",
        "*",
        "*.com",
        "api.*.com",
        "**.example.com",
        "*.10.0.0.1",
        "api.openai.com:0",
        "api.openai.com:65536",
        "api.openai.com:http",
        "api.openai.com:",
        "::1",
        "[::1",
        "[::1]x",
        "[not-ipv6]",
        "-bad.example",
        "bad_.example",
        "a..example",
        "1.2.3.999",
        "x" * 254,
        "a" * 64 + ".example",
    ],
)
def test_bad_patterns_are_refused_naming_the_pattern(pattern: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        canonical_patterns([pattern])
    assert "invalid host pattern" in caught.value.message
    if pattern:
        assert repr(pattern[:80]).strip("'") in caught.value.message


def test_at_most_32_patterns() -> None:
    canonical_patterns([f"h{i}.example" for i in range(MAX_PATTERNS)])
    with pytest.raises(InvalidArgument, match="at most 32"):
        canonical_patterns([f"h{i}.example" for i in range(MAX_PATTERNS + 1)])


def test_stored_form_round_trips() -> None:
    patterns = canonical_patterns(["api.openai.com", "*.openai.azure.com"])
    text = patterns_json(patterns)
    assert text == '["*.openai.azure.com","api.openai.com"]'
    assert patterns_from_json(text) == patterns
    assert parse_pattern("*.openai.azure.com").wildcard
